"""First visible text, as the page delivers it: a client of the page's own protocol (the
Gradio queue events its JavaScript joins and the event stream it reads), so a figure taken
here is what a reader's tab receives."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ftchat.config import Settings
from ftchat.tools.bench.cold_start import ftchat_command
from ftchat.tools.bench.timings import p50, p95


class PageSession:
    """One browser tab's worth of the page's own protocol: the same Gradio queue events the
    page's JavaScript joins (`/gradio_api/queue/join`) and the same event stream it reads
    (`/gradio_api/queue/data`), so a figure taken here is what a reader's page receives."""

    def __init__(self, client, url: str) -> None:
        import uuid

        self.client, self.url = client, url.rstrip("/")
        self.session = uuid.uuid4().hex
        config = client.get(f"{self.url}/config").raise_for_status().json()
        self.components = {c["id"]: c for c in config["components"]}
        question = next(c["id"] for c in config["components"]
                        if c.get("props", {}).get("elem_id") == "ft-question")
        events = config["dependencies"]
        self.submit = next(d for d in events if [question, "submit"] in map(list, d["targets"]))
        self.respond = next(d for d in events if d.get("trigger_after") == self.submit["id"])

    def event(self, dependency: dict, data: list) -> Iterator[dict]:
        """Join one event and yield its messages from the event stream until it completes."""
        joined = self.client.post(f"{self.url}/gradio_api/queue/join", json={
            "data": data, "event_data": None, "fn_index": dependency["id"], "trigger_id": None,
            "session_hash": self.session}).raise_for_status().json()
        with self.client.stream("GET", f"{self.url}/gradio_api/queue/data",
                                params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != joined["event_id"]:
                    continue
                yield message
                if message.get("msg") == "process_completed":
                    if not message.get("success", True):
                        raise RuntimeError(f"the page's event failed: {message.get('output')}")
                    return

    def ask(self, question: str) -> float | None:
        """Ask as the Ask button does (submit, then the answer streamed into the chat); the
        milliseconds from the click until the first update whose answer shows text."""
        from gradio_client.utils import apply_diff

        from ftchat.page.render import shown_answer_text

        started = time.perf_counter()
        for _ in self.event(self.submit, [question, None]):
            pass
        # The inputs as a fresh tab sends them: the controls' initial values (State: None).
        values = [self.components[i].get("props", {}).get("value") for i in self.respond["inputs"]]
        first, chat = None, None
        for message in self.event(self.respond, values):
            if message.get("msg") not in ("process_generating", "process_completed"):
                continue
            data = message["output"]["data"][0]
            if message["msg"] == "process_generating" and chat is not None:
                chat = apply_diff(chat, data)  # after the first, streamed updates are diffs
            else:
                chat = data
            if first is None and chat and shown_answer_text(_message_text(chat[-1])):
                first = (time.perf_counter() - started) * 1000
        return first


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def bench_first_visible_text(settings: Settings, questions: list[str], repeats: int,
                             timeout: float = 180.0) -> dict:
    """A fresh `ftchat serve`: the seconds until it says it is ready (cold_start_page_s), then
    each question asked in a new tab's session, after one warm-up question (the model
    loaded). First visible text: from the click on Ask until the page receives the first
    update of the conversation that shows answer text (not a status)."""
    import httpx

    from ftchat.page.serve import PageProcess

    with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as folder:
        page = PageProcess(Path(folder) / "page.log", env=settings.child_environment(),
                           command=[*ftchat_command(), "serve"])
        try:
            ready_s = page.wait_ready(timeout)
            with httpx.Client(timeout=timeout) as client:
                PageSession(client, page.url).ask(questions[0])  # warm-up: model loaded
                times = [PageSession(client, page.url).ask(q) for _ in range(repeats) for q in questions]
        finally:
            page.stop()
    shown = [t for t in times if t is not None]
    return {
        "cold_start_page_s": ready_s,
        "first_visible_text_ms_p50": p50(shown) if shown else None,
        "first_visible_text_ms_p95": p95(shown) if shown else None,
        "first_visible_text_runs": len(times),
        "first_visible_text_missing": len(times) - len(shown),
    }
