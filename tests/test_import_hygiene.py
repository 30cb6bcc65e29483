"""The headless core never imports the dashboard: each powerbert module is imported in a fresh
interpreter and textual must not appear in sys.modules (as harlequin checks its core)."""

import pkgutil
import subprocess
import sys

import powerbert

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(powerbert.__path__, "powerbert.")
    if not m.name.endswith(("__main__", ".generate"))
)


def test_core_modules_do_not_import_textual():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tui')))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(MODULES) > 10
