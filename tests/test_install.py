"""A non-editable install (`pip install .`) answers from the guide it ships, from any folder.

The install goes into a new venv that borrows this venv's libraries through a .pth line, so
nothing is downloaded (torch least of all). A plain path line in a .pth processes no further
.pth files, so the checkout's editable ftchat stays out of sight: only the installed copy
can answer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ftchat import config
from ftchat.config import REPO_ROOT
from ftchat.documents import corpus


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """config and corpus as an installed package sees them: no checkout around it."""
    monkeypatch.setattr(config, "IN_CHECKOUT", False)
    monkeypatch.setattr(corpus, "IN_CHECKOUT", False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("FTCHAT_CORPUS_DIR", raising=False)
    monkeypatch.delenv("FTCHAT_INDEX_DIR", raising=False)
    return tmp_path


def test_installed_defaults_are_the_shipped_guide_and_the_user_data_folder(installed, monkeypatch):
    settings = config.Settings()
    assert settings.corpus_dir == config.SHIPPED_CORPUS
    assert settings.questions_file == config.PACKAGE_DIR / "train" / "questions.jsonl"
    assert settings.index_dir == installed / "home" / ".local" / "share" / "ftchat" / "index"
    monkeypatch.setenv("XDG_DATA_HOME", str(installed / "data"))
    assert config.Settings().index_dir == installed / "data" / "ftchat" / "index"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")  # the XDG spec: ignore it
    assert config.Settings().index_dir == installed / "home" / ".local" / "share" / "ftchat" / "index"


def test_checkout_defaults_stay_in_the_repository(monkeypatch):
    monkeypatch.delenv("FTCHAT_CORPUS_DIR", raising=False)
    monkeypatch.delenv("FTCHAT_INDEX_DIR", raising=False)
    assert config.IN_CHECKOUT
    assert (config.Settings().corpus_dir, config.Settings().index_dir) == (
        REPO_ROOT / "corpus", REPO_ROOT / "index"
    )
    assert config.Settings().questions_file == REPO_ROOT / "train" / "questions.jsonl"


def test_the_shipped_guide_is_cited_as_in_a_checkout(installed):
    shipped = config.SHIPPED_CORPUS / "01-key-concepts-foundations.md"
    assert corpus.display_path(shipped) == "corpus/01-key-concepts-foundations.md"
    assert corpus.display_path(installed / "notes.md") == str((installed / "notes.md").resolve())


def _copy_sources(target: Path) -> Path:
    # Built from a copy, because setuptools writes build/ and *.egg-info next to the sources.
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, target / name)
    for name in ("src", "corpus", "train"):
        shutil.copytree(REPO_ROOT / name, target / name, ignore=skip)
    return target


def _new_venv(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(folder), "platbase": str(folder)})["purelib"])
    (site / "borrowed-libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return folder / "bin"


@pytest.mark.slow  # builds the guide's index from scratch: about 15-60 s here
@pytest.mark.subprocess
def test_installed_ftchat_searches_the_guide_it_ships_and_indexes_into_the_data_folder(tmp_path):
    source = _copy_sources(tmp_path / "source")
    bin_dir = _new_venv(tmp_path / "venv")
    home, data, elsewhere = tmp_path / "home", tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FTCHAT_", "PYTHON", "XDG_"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(data))
    # --ignore-installed: never touch the ftchat this venv sees through the borrowed path.
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--ignore-installed", str(source)],
        check=True, env=env, cwd=tmp_path,
    )
    shutil.rmtree(source)  # the installed package must not need its sources

    result = subprocess.run(
        [bin_dir / "ftchat", "search", "What is LoRA?", "--json"],
        capture_output=True, text=True, env={**env, "FTCHAT_RANKER": "on"}, cwd=elsewhere, timeout=900,
    )

    assert result.returncode == 0, result.stderr
    passages = json.loads(result.stdout)["passages"]
    guide_files = {f"corpus/{p.name}" for p in (REPO_ROOT / "corpus").glob("*.md")}
    assert passages and passages[0]["source"] in guide_files, passages[:1]
    assert "LoRA" in passages[0]["title"]
    # The learned ranker (off by default) is package data too: switched on, it reordered the
    # passages, with no warning.
    assert passages[0]["learned_score"] is not None and "ranker" not in result.stderr.lower()
    index_dir = data / "ftchat" / "index"
    assert (index_dir / "CURRENT").is_file(), sorted(str(p) for p in tmp_path.rglob("CURRENT"))
    version = index_dir / (index_dir / "CURRENT").read_text().strip()
    manifest = json.loads((version / "manifest.json").read_text())
    shipped = Path(manifest["corpus_dir"])
    assert shipped.is_relative_to(tmp_path / "venv") and shipped.name == "guide", shipped
    assert set(manifest["files"]) == guide_files
    assert manifest["questions"]["used"] > 1000  # the sample questions it ships
    assert Path(manifest["questions"]["file"]).is_relative_to(tmp_path / "venv")
    assert not list(elsewhere.iterdir())  # nothing written where it was run
