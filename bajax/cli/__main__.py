"""`python -m bajax.cli ARGS` = `bajax ARGS` without the tcmalloc restart (see bajax/cli/__init__.py)."""

import sys

from bajax.cli import main

sys.exit(main())
