"""Run CPU jobs on tcmalloc: XLA:CPU allocates each step's temporaries afresh, and glibc's malloc hands
large freed blocks back to the kernel, so every step page-faults its working set in again. tcmalloc keeps
freed memory for reuse: no faults after the first step, and a faster step (measured in bench/RESULTS_lm.md
and the README). The allocator must be preloaded when the process starts, hence a re-exec.

    apt-get install libtcmalloc-minimal4      (Debian/Ubuntu; the `bajax` script then restarts on it itself)
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python my_script.py   (other entry points)
"""

from __future__ import annotations

import os
import sys

TCMALLOC_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
               "/usr/local/lib")


def find_tcmalloc() -> str | None:
    """Path of an installed tcmalloc shared library, or None."""
    for directory in SEARCH_DIRS:
        for name in TCMALLOC_NAMES:
            path = os.path.join(directory, name)
            if os.path.exists(path):
                return path
    return None


def preloaded_tcmalloc() -> str | None:
    """The tcmalloc this process was started with (in LD_PRELOAD), or None."""
    return next((p for p in os.environ.get("LD_PRELOAD", "").split(":") if "tcmalloc" in p), None)


def allocator() -> str:
    """The allocator of this process, for start-up messages: tcmalloc's path, or glibc and what to do."""
    current = preloaded_tcmalloc()
    if current:
        return current
    path = find_tcmalloc()
    hint = (f"LD_PRELOAD={path}, which the `bajax` script sets itself" if path
            else "apt-get install libtcmalloc-minimal4")
    return f"glibc malloc (XLA:CPU steps run ~15% faster on tcmalloc: {hint})"


def use(choice: str) -> str:
    """For entry points with a `--malloc tcmalloc|glibc` flag: restart on tcmalloc when asked (see
    `reexec_with_tcmalloc`); returns the allocator in use."""
    return reexec_with_tcmalloc() if choice == "tcmalloc" else preloaded_tcmalloc() or "glibc"


def reexec_with_tcmalloc() -> str:
    """Restart this Python process (same argv) with tcmalloc preloaded, unless it already runs on it.

    Returns the allocator in use when it does not restart: the tcmalloc path, or "glibc (tcmalloc not
    installed: apt-get install libtcmalloc-minimal4)". Call it first thing in an entry point (a script or a
    console script; not `python -c`), before any work worth keeping: the restart replaces the process.
    """
    current = preloaded_tcmalloc()
    if current:
        return current
    path = find_tcmalloc()
    if path is None:
        return "glibc (tcmalloc not installed: apt-get install libtcmalloc-minimal4)"
    env = dict(os.environ, LD_PRELOAD=":".join(p for p in (path, os.environ.get("LD_PRELOAD", "")) if p))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
    raise AssertionError("unreachable")  # execve does not return
