"""The package's layout holds: rooms import only downward, and no import circle anywhere.

The contracts live in .importlinter (also run by `make lint`); here the suite keeps them,
so a change that imports upward fails CI, not only a lint run someone may skip.
"""

from __future__ import annotations

from importlinter.cli import lint_imports

from ftchat.config import REPO_ROOT


def test_imports_run_downward_without_circles(capsys):
    code = lint_imports(config_filename=str(REPO_ROOT / ".importlinter"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out
