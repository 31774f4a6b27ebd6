"""The real page, started with `python app.py` on a free port, asked through gradio_client.

The server runs over the real corpus with a private index folder (built once per test
session, shared with test_browser.py through `running_app`) and the user's model cache.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from guide_fixtures import FTCHAT

from ftchat.answering.answer import cited_numbers
from ftchat.page.serve import LOOPBACK_HOSTS, PageProcess

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240  # first index build of the real corpus plus Gradio's start

_SERVER: dict = {}


def running_app(tmp_root: Path) -> str:
    """URL of the app process for this test session, started on first use."""
    if _SERVER.get("page"):
        return _SERVER["page"].url
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTCHAT_")}
    env.pop("GRADIO_ANALYTICS_ENABLED", None)  # the page must turn analytics off itself
    env.update(FTCHAT_INDEX_DIR=str(tmp_root / "index"), FTCHAT_PROGRESS_FILE=str(tmp_root / "progress.db"),
               FTCHAT_CACHE_DIR=str(Path.home() / ".cache" / "ftchat"))
    page = PageProcess(tmp_root / "app.log", env=env, command=[sys.executable, str(ROOT / "app.py")],
                       cwd=ROOT)
    try:
        _SERVER.update(page=page, start_seconds=page.wait_ready(START_TIMEOUT_S))
    except RuntimeError as exc:
        page.stop()
        _SERVER.clear()
        pytest.fail(f"app.py did not start: {exc}")
    return page.url


def stop_app() -> None:
    page = _SERVER.pop("page", None)
    if page is not None:
        page.stop()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "ftchat-app"
    root.mkdir(exist_ok=True)
    yield running_app(root)
    stop_app()


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def ask(client, question: str, **kwargs) -> tuple[list[dict], dict]:
    """All streamed outputs of /ask, and the final one."""
    job = client.submit(question, api_name="/ask", **kwargs)
    outputs = list(job)
    assert outputs, "no output from /ask"
    return outputs, outputs[-1]


# Every test here talks to the app process started for the session (it warms up the model).
pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.model]


def test_in_scope_question_streams_a_cited_answer(client):
    outputs, final = ask(client, "What is QLoRA?")
    assert final["done"] is True, final
    assert final["answerable"] is True
    assert final["mode"] in ("generated", "extractive")
    assert any(not o["done"] and o["answer"] for o in outputs[:-1]), "nothing was streamed before the end"

    cited = set(cited_numbers(final["answer"]))
    assert cited, f"answer has no citation: {final['answer']!r}"
    numbers = {c["n"] for c in final["citations"]}
    assert cited <= numbers, (cited, numbers)
    for citation in final["citations"]:
        assert citation["source"].startswith("corpus/") and citation["source"].endswith(".md")
        assert re.fullmatch(r"line \d+", citation["location"])
        assert citation["text"].strip()
    assert any("QLoRA" in c["title"] or "QLoRA" in c["text"] for c in final["citations"])
    assert final["passages"] and all(p["score"] > 0 for p in final["passages"])


def test_out_of_scope_question_is_declined(client):
    _, final = ask(client, "What is the capital of France?")
    assert final["done"] is True
    assert final["answerable"] is False
    assert final["mode"] == "declined"
    assert "doesn't cover" in final["answer"]
    assert final["citations"] == []
    assert final["passages"] == [], "nothing in the guide comes close: no sections offered"
    _, near = ask(client, "How do I tune the strings of my guitar?")
    assert near["answerable"] is False and near["passages"], "a near miss offers the closest sections"


def test_empty_question_is_a_readable_error_and_the_app_keeps_working(client):
    _, final = ask(client, "   ")
    assert final["done"] is True and "empty" in final["error"]
    _, again = ask(client, "What is gradient accumulation?")
    assert again["answerable"] is True and again["citations"]


def test_page_is_local_and_without_analytics(app_url):
    """The page listens on loopback only and tells the browser that analytics are off,
    although the app was started without FTCHAT_HOST or GRADIO_ANALYTICS_ENABLED."""
    import psutil

    listening = [c.laddr for c in psutil.Process(_SERVER["page"].process.pid).net_connections("inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening, "the app process listens on nothing"
    assert all(addr.ip in LOOPBACK_HOSTS for addr in listening), listening
    with urllib.request.urlopen(app_url + "config", timeout=10) as response:
        config = json.loads(response.read())
    assert config["analytics_enabled"] is False
    assert config.get("share_url") in (None, "")


# --- app.py is `ftchat serve`; launch takes its credentials from Settings -------------------


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FTCHAT_")}
    return subprocess.run(command, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)


def test_app_py_gives_the_same_one_line_error_as_ftchat_serve():
    app_py = [sys.executable, str(ROOT / "app.py")]
    serve = [str(FTCHAT), "serve"]
    bad_auth = [_run([*command, "--auth", "no-colon"]) for command in (app_py, serve)]
    assert [r.returncode for r in bad_auth] == [2, 2]
    assert bad_auth[0].stderr == bad_auth[1].stderr
    assert bad_auth[0].stderr.splitlines()[-1] == (
        "Error: Invalid value for --auth: credentials must look like user:password (both parts non-empty)")


def test_serve_takes_auth_from_settings_and_auth_overrides_it(monkeypatch):
    from click.testing import CliRunner

    from ftchat.cli import main
    from ftchat.page import serve

    launched: list = []
    monkeypatch.setattr(serve, "launch", lambda settings, **kwargs: launched.append(settings.auth))
    for key in [k for k in os.environ if k.startswith("FTCHAT_")]:
        monkeypatch.delenv(key)
    runner = CliRunner()
    assert runner.invoke(main, ["serve"]).exit_code == 0
    assert runner.invoke(main, ["serve"], env={"FTCHAT_AUTH": "bob:pw"}).exit_code == 0
    overridden = runner.invoke(main, ["serve", "--auth", "carol:pw:x"], env={"FTCHAT_AUTH": "bob:pw"})
    assert overridden.exit_code == 0
    assert launched == [None, ("bob", "pw"), ("carol", "pw:x")]
