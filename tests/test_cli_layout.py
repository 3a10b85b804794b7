"""Entry points live in one package, bajax/cli: no engine or model module imports it, and every command of
`bajax` is registered by a module in it."""

import ast
from pathlib import Path

import pytest

import bajax
from bajax import cli

PACKAGE = Path(bajax.__file__).resolve().parent


def imports(source: str, module: str) -> set[str]:
    """Every module that `source` (the text of `module`, e.g. "bajax.train.trainer") imports, anywhere in the
    file, absolute: relative imports are resolved, and `from a import b` counts as a and a.b."""
    package = module.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def is_cli(module: str) -> bool:
    return module == "bajax.cli" or module.startswith("bajax.cli.")


def module_name(path: Path) -> str:
    """bajax/speech/reply.py -> bajax.speech.reply; bajax/speech/__init__.py -> bajax.speech.__init__ (whose
    package, for relative imports, is bajax.speech as it should be)."""
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_no_module_outside_bajax_cli_imports_it():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        bad = sorted(m for m in imports(path.read_text(), module_name(path)) if is_cli(m))
        if bad:
            offenders[str(path.relative_to(PACKAGE.parent))] = bad
    assert offenders == {}, "engine and model modules must not import the CLI: move what they share into the library"


@pytest.mark.parametrize("source, module", [
    ("import bajax.cli", "bajax.train.trainer"),
    ("from bajax import cli", "bajax.quickstart"),
    ("from bajax.cli.train import load_config_or_exit", "bajax.train.plan"),
    ("def f():\n    from bajax.cli import main", "bajax.speech.reply"),
    ("from ..cli import generate", "bajax.speech.reply"),
    ("from .. import cli", "bajax.speech.reply"),
    ("from . import cli", "bajax.sweep"),
])
def test_the_check_sees_every_spelling_of_a_cli_import(source, module):
    assert any(is_cli(m) for m in imports(source, module))


def test_the_check_passes_ordinary_imports():
    assert not any(is_cli(m) for m in imports("from bajax import config_files\nfrom .cli_util import x\n"
                                              "import bajax.client", "bajax.train.trainer"))


def test_every_command_is_registered_by_a_bajax_cli_module():
    assert all(is_cli(module) for _, module in cli.COMMANDS)
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == [name for name, _ in cli.COMMANDS]
