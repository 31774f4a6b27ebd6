"""Fixtures over the real guide (corpus/) with a real index in a temporary folder.

Imported by conftest.py so that the answer, CLI and UI tests share one index build and
one model load per test session.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from ftchat.api import Assistant
from ftchat.config import REPO_ROOT, Settings
from ftchat.index.store import open_index

# One model cache for the whole test session, never the user's ~/.cache: the bundled model
# is dequantized into it once per session (~20 s), and every test and CLI subprocess shares
# it. conftest.py points FTCHAT_CACHE_DIR here and removes it when the session ends.
MODEL_CACHE = Path(tempfile.mkdtemp(prefix="ftchat-test-models-"))


@pytest.fixture(scope="session")
def guide_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(
        corpus_dir=REPO_ROOT / "corpus",
        index_dir=tmp_path_factory.mktemp("guide-index"),
        cache_dir=MODEL_CACHE,
    )
    open_index(settings)
    return settings


@pytest.fixture(scope="session")
def assistant(guide_settings: Settings) -> Assistant:
    return Assistant(guide_settings)


FTCHAT = Path(REPO_ROOT) / ".venv" / "bin" / "ftchat"
