"""bajax's ml_collections configs, installed as the package `bajax_configs` (see setup.py).

They are files, loaded by path (`bajax train --config configs/lm/tiny.py`), not imported; this file only makes
the directory a package so that a non-editable install ships it. `bajax.config_files` finds it.
"""
