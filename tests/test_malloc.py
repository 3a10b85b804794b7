"""bajax.malloc: the tcmalloc re-exec used by CPU entry points (bench/lm_train.py)."""

import os
import subprocess
import sys

import pytest

from bajax import malloc


def test_preloaded_tcmalloc_reads_ld_preload(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "/opt/a.so:/usr/lib/libtcmalloc_minimal.so.4")
    assert malloc.preloaded_tcmalloc() == "/usr/lib/libtcmalloc_minimal.so.4"
    monkeypatch.setenv("LD_PRELOAD", "/opt/a.so")
    assert malloc.preloaded_tcmalloc() is None


@pytest.mark.skipif(malloc.find_tcmalloc() is None, reason="tcmalloc is not installed")
def test_reexec_restarts_the_process_on_tcmalloc(tmp_path):
    """A script restarted by it has tcmalloc mapped and keeps its arguments."""
    script = tmp_path / "entry.py"
    script.write_text("import sys\nfrom bajax import malloc\nprint(malloc.reexec_with_tcmalloc(), sys.argv[1:])\n"
                      "print(any('tcmalloc' in line for line in open('/proc/self/maps')))\n")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, str(script), "--flag"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == [f"{malloc.find_tcmalloc()} ['--flag']", "True"]
