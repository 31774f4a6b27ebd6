"""The real page, started with `python app.py` on a free port, asked through gradio_client.

The server runs over the real corpus with a private index folder (built once per test
session, shared with test_browser.py through `running_app`) and the user's model cache.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 240  # first index build of the real corpus plus Gradio's start

_SERVER: dict = {}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def running_app(tmp_root: Path) -> str:
    """URL of the app process for this test session, started on first use."""
    if _SERVER.get("url"):
        return _SERVER["url"]
    port = _free_port()
    log_path = tmp_root / "app.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTCHAT_")}
    env.update(
        FTCHAT_INDEX_DIR=str(tmp_root / "index"),
        FTCHAT_CACHE_DIR=str(Path.home() / ".cache" / "ftchat"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )
    log = log_path.open("w")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    _SERVER.update(process=process, log=log, log_path=log_path)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        if "ftchat page ready" in log_path.read_text(errors="replace"):
            _SERVER.update(url=url, start_seconds=time.perf_counter() - started)
            return url
        time.sleep(0.25)
    stop_app()
    pytest.fail(f"app.py did not come up in {START_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")


def stop_app() -> None:
    process = _SERVER.pop("process", None)
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    if "log" in _SERVER:
        _SERVER.pop("log").close()
    _SERVER.pop("url", None)


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


pytestmark = pytest.mark.slow  # every test here talks to the app process started for the session


def test_in_scope_question_streams_a_cited_answer(client):
    outputs, final = ask(client, "What is QLoRA?")
    assert final["done"] is True, final
    assert final["answerable"] is True
    assert final["mode"] in ("generated", "extractive")
    assert any(not o["done"] and o["answer"] for o in outputs[:-1]), "nothing was streamed before the end"

    cited = {int(n) for n in re.findall(r"\[(\d+)\]", final["answer"])}
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
    assert final["passages"], "closest sections should be offered"


def test_empty_question_is_a_readable_error_and_the_app_keeps_working(client):
    _, final = ask(client, "   ")
    assert final["done"] is True and "empty" in final["error"]
    _, again = ask(client, "What is gradient accumulation?")
    assert again["answerable"] is True and again["citations"]


def test_page_config_is_local_and_without_analytics(app_url):
    assert app_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(app_url + "config", timeout=10) as response:
        config = json.loads(response.read())
    assert config["analytics_enabled"] is False
    assert config.get("share_url") in (None, "")
