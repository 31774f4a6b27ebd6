"""What every tab of the page shares: the Assistant (one index, one model cache), the
model warm-up with a visible status, the pipeline run in a worker, and added documents.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ftchat.answering.answer import Answer
from ftchat.api import Assistant
from ftchat.models.memory import release_free_memory
from ftchat.page.uploads import Progress, index_uploads, store_uploads

log = logging.getLogger(__name__)


class ModelLoader:
    """Loads generators in background threads and reports where each one stands.

    `load(name)` loads one (the page passes its Assistant's, so the warm-up loads exactly
    the model, dtype and decoder a question will use).
    """

    def __init__(self, load: Callable[[str], object]) -> None:
        self._load_model = load
        self._state: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        with self._lock:
            current = self._state.get(name)
            if current and current["state"] in ("loading", "ready"):
                return
            self._state[name] = {"state": "loading", "started": time.perf_counter()}
        threading.Thread(target=self._load, args=(name,), name=f"load-{name}", daemon=True).start()

    def _load(self, name: str) -> None:
        started = time.perf_counter()
        try:
            self._load_model(name)
        except Exception as exc:  # shown in the status line; a question retries the load
            log.exception("Loading model %s failed", name)
            with self._lock:
                self._state[name] = {"state": "error", "error": f"{type(exc).__name__}: {exc}"}
            return
        with self._lock:
            self._state[name] = {"state": "ready", "seconds": time.perf_counter() - started}
        log.info("Model %s ready after %.1f s", name, time.perf_counter() - started)

    def ready(self, name: str) -> bool:
        return self._state.get(name, {}).get("state") == "ready"

    def loading(self, name: str) -> bool:
        return self._state.get(name, {}).get("state") == "loading"

    def describe(self, name: str) -> str:
        info = self._state.get(name)
        if info is None:
            return f"{name} (loads on first question)"
        if info["state"] == "ready":
            return f"{name} (ready)"
        if info["state"] == "error":
            return f"{name} (failed to load: {info['error']})"
        return f"{name} (loading… {time.perf_counter() - info['started']:.0f} s)"



class ChatApp:
    """Shared by every tab: the assistant (one index, one model cache) and the warm-up."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.settings = assistant.settings
        # Only the model changes: the dtype, threads and decoder stay this page's settings.
        self.loader = ModelLoader(
            lambda name: Assistant(self.settings.with_overrides(model=name)).load_generator()
        )
        self._variants: dict[tuple[str, int], Assistant] = {}
        self._variants_lock = threading.Lock()
        self.indexing = False
        self.embedder_ready = False

    def warm_up(self) -> None:
        """Embedder first (every question needs it), then the default model, then the
        vectors of the guide's sentences that evidence is chosen from."""

        def run() -> None:
            try:
                self.assistant.retriever.embedder.encode(["warm up"])
                self.embedder_ready = True
            except Exception:
                log.exception("Warming up the embedder failed")
            self.loader.start(self.settings.model)
            # Not while the model loads: both want the CPU, and the model is needed first.
            while self.loader.loading(self.settings.model):
                time.sleep(0.2)
            try:
                started = time.perf_counter()
                count = self.assistant.remember_guide_sentences()
                log.info("%d guide sentences embedded for evidence in %.1f s", count,
                         time.perf_counter() - started)
            except Exception:
                log.exception("Embedding the guide's sentences ahead of questions failed")

        threading.Thread(target=run, name="warm-up", daemon=True).start()

    def assistant_for(self, model: str, max_new_tokens: int) -> Assistant:
        """The assistant for this request's settings; variants share the loaded index."""
        base = self.assistant
        model = model or self.settings.model
        max_new_tokens = int(max_new_tokens or self.settings.max_new_tokens)
        if model == self.settings.model and max_new_tokens == self.settings.max_new_tokens:
            return base
        index = base.index
        with self._variants_lock:
            key = (model, max_new_tokens)
            variant = self._variants.get(key)
            if variant is None:
                variant = Assistant(self.settings.with_overrides(model=model, max_new_tokens=max_new_tokens))
                self._variants[key] = variant
            if variant._index is not index:
                variant.reload(index)
            return variant

    def status(self, model: str | None = None) -> str:
        model = model or self.settings.model
        try:
            index = self.assistant.index
            documents = len(index.manifest.get("files", {}))
            guide = f"**Guide:** {documents} documents, {len(index.chunks)} passages indexed"
        except Exception as exc:  # pragma: no cover - the page still shows why
            guide = f"**Guide:** index unavailable ({exc})"
        embedder = self.settings.embedder + ("" if self.embedder_ready else " (warming up)")
        parts = [guide, f"**Embedder:** {embedder}", f"**Model:** {self.loader.describe(model)}"]
        if self.indexing:
            parts.append("**Adding documents…**")
        return " · ".join(parts)

    def stream(
        self, assistant: Assistant, question: str, history: list[str], k: int | None,
        earlier_answers: list[str] | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Run Assistant.stream in a worker and relay it: ("piece", str), ("answer", Answer),
        ("tick", seconds waited so far) while nothing new arrived, or ("error", exception).

        The worker lets the page keep showing a live status while the pipeline is blocked
        (a model still loading), and a closed tab stops the worker at the next piece.
        """
        items: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def work() -> None:
            iterator = assistant.stream(question, history, k, earlier_answers)
            try:
                for item in iterator:
                    if cancel.is_set():
                        break
                    items.put(("answer" if isinstance(item, Answer) else "piece", item))
            except Exception as exc:
                log.exception("Answering %r failed", question)
                items.put(("error", exc))
            finally:
                iterator.close()
                items.put(("end", None))

        self.loader.start(assistant.settings.model)
        started = time.perf_counter()
        threading.Thread(target=work, name="answer", daemon=True).start()
        try:
            while True:
                try:
                    kind, value = items.get(timeout=0.5)
                except queue.Empty:
                    yield "tick", time.perf_counter() - started
                    continue
                if kind == "end":
                    return
                yield kind, value
        finally:
            cancel.set()
            release_free_memory()

    def add_documents(self, paths: list[str], progress: Progress | None = None) -> str:
        """Check, store and index uploaded files; a Markdown report, one line per file."""
        lines, stored = store_uploads(paths, self.settings.index_dir / "uploads", progress)
        if not stored:
            return "\n\n".join(lines) or "No files were given."
        if progress:
            progress(len(paths) / (len(paths) + 2), desc="Embedding and indexing the new documents")
        self.indexing = True
        try:
            lines += index_uploads(self.assistant, stored)
        finally:
            self.indexing = False
        if progress:
            progress(1.0, desc="Done")
        return "\n\n".join(lines)
