"""The package's layout holds: rooms import only downward, and no import circle anywhere.

The contracts live in .importlinter (also run by `make lint`); here the suite keeps them,
so a change that imports upward fails CI, not only a lint run someone may skip. It runs as
a child process: import-linter configures logging with dictConfig, which would disable
every logger this test process already has (and with them the warnings other tests read).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ftchat.config import REPO_ROOT


@pytest.mark.subprocess
def test_imports_run_downward_without_circles():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache", "--config", str(REPO_ROOT / ".importlinter")],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_subpackage_ships_in_the_wheel():
    """The editable install finds any folder; a built wheel holds only the listed packages."""
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    source = REPO_ROOT / "src"
    found = {".".join(p.parent.relative_to(source).parts) for p in source.glob("ftchat/**/__init__.py")}
    assert found <= listed, sorted(found - listed)
