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


@pytest.mark.skipif(malloc.find_tcmalloc() is None, reason="tcmalloc is not installed")
@pytest.mark.parametrize("choice", ["tcmalloc", "glibc"])
def test_console_script_restarts_on_tcmalloc_unless_told_not_to(tmp_path, choice):
    """`bajax.cli.console_main` (the installed `bajax` script) runs its command on tcmalloc;
    BAJAX_MALLOC=glibc keeps the system allocator."""
    script = tmp_path / "bajax_entry.py"
    script.write_text("import sys\nfrom bajax import cli, malloc\nprint('allocator:', malloc.allocator())\n"
                      "sys.exit(cli.console_main())\n")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"BAJAX_MALLOC": choice}
    out = subprocess.run([sys.executable, str(script), "--help"], env=env, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    allocators = [line for line in out if line.startswith("allocator:")]
    assert any(line.startswith("usage: bajax") for line in out)  # the command ran, with its arguments
    if choice == "tcmalloc":  # first on glibc, then restarted on tcmalloc
        assert allocators[0].startswith("allocator: glibc malloc") and len(allocators) == 2
        assert allocators[1] == f"allocator: {malloc.find_tcmalloc()}"
    else:
        assert len(allocators) == 1 and allocators[0].startswith("allocator: glibc malloc")


def test_console_script_rejects_an_unknown_allocator(monkeypatch):
    from bajax import cli

    monkeypatch.setenv("BAJAX_MALLOC", "jemalloc")
    with pytest.raises(SystemExit, match="BAJAX_MALLOC must be 'tcmalloc' or 'glibc', got 'jemalloc'"):
        cli.console_main()
