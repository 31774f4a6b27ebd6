"""The Gradio page: a streaming chat with clickable citations, a sources panel and uploads.

    from ftchat.ui import launch
    launch(Settings())          # http://127.0.0.1:7860

Everything the page shows comes from `Assistant.stream()`, the same call the CLI uses.
The page adds only what a browser needs: per-tab conversations (gr.State), a queue so
the model never runs twice at once, a background warm-up with a visible status, and a
careful upload path (size limit, content sniffing, sanitized names inside the index's
own uploads/ folder).
"""

from __future__ import annotations

import html
import logging
import os
import queue
import re
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Gradio reads this when it is imported and when Blocks are created: no telemetry.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402

from .answer import Answer  # noqa: E402
from .api import Assistant  # noqa: E402
from .config import Settings  # noqa: E402
from .corpus import display_path  # noqa: E402
from .index import open_index, sha256_file  # noqa: E402
from .memory import limit_malloc_arenas, release_free_memory  # noqa: E402
from .models import generator_names, get_generator  # noqa: E402
from .retrieval import Passage, QuestionError  # noqa: E402

log = logging.getLogger(__name__)

TITLE = "ftchat · ask the fine-tuning guide"
DESCRIPTION = (
    "Ask about fine-tuning large language models: LoRA and QLoRA, data preparation, "
    "hyperparameters, training tricks, strategies like full, layer-wise or adapter tuning, "
    "and more. Answers are written from the guide's own sentences, each with a numbered "
    "citation [n] you can click to see the passage it came from."
)
FOOTER = (
    "Answers come only from the guide (and any documents you add on this page), never from "
    "the model's general knowledge: if the guide doesn't cover a question, the assistant says "
    "so. Everything runs locally on this machine; nothing is sent anywhere."
)
EXAMPLES = [
    "What is QLoRA?",
    "How does gradient accumulation help when GPU memory is small?",
    "How can I avoid catastrophic forgetting?",
    "When is LoRA a better choice than full fine-tuning?",
]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
UPLOAD_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text",
                   ".pdf": "pdf", ".html": "html", ".htm": "html"}
_BINARY_MAGIC = (b"PK\x03\x04", b"\x7fELF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"MZ",
                 b"\x1f\x8b", b"BZh", b"7z\xbc\xaf", b"Rar!", b"%PDF")
_HTML_TAG = re.compile(rb"<\s*(!doctype|html|head|body|p|h[1-6]|div|article|section|main|title|ul|table)\b",
                       re.IGNORECASE)
_CITE = re.compile(r"\[(\d+)\]")

CSS = """
.gradio-container { max-width: 1400px !important; margin: 0 auto; }
#ft-header h1 { margin-bottom: 0.2em; }
#ft-header p { margin-top: 0; opacity: 0.85; }
#ft-status { font-size: 0.88em; padding: 6px 10px; border-radius: 8px;
             background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
#ft-status p { margin: 0; }
a.cite { text-decoration: none; font-weight: 600; font-size: 0.85em; padding: 0 3px;
         border-radius: 4px; background: rgba(99, 102, 241, 0.15); color: #4f46e5 !important;
         cursor: pointer; white-space: nowrap; }
a.cite:hover { background: rgba(99, 102, 241, 0.32); }
.ft-note { font-size: 0.82em; opacity: 0.75; }
#ft-sources { max-height: 640px; overflow-y: auto; }
.src-empty { opacity: 0.7; font-size: 0.92em; padding: 8px; }
.src-turn { margin-bottom: 10px; }
.src-turn > summary { cursor: pointer; font-weight: 600; font-size: 0.92em; margin-bottom: 6px; }
.src-card { border: 1px solid var(--border-color-primary); border-left: 4px solid #6366f1;
            border-radius: 8px; padding: 8px 10px; margin: 6px 0; background: var(--block-background-fill);
            transition: box-shadow 0.3s; }
.src-card.uncited { border-left-color: #9ca3af; opacity: 0.85; }
.src-card.flash { box-shadow: 0 0 0 3px rgba(99, 102, 241, 0.55); }
.src-head { font-weight: 600; font-size: 0.93em; }
.src-n { color: #4f46e5; margin-right: 4px; }
.src-meta { font-size: 0.8em; opacity: 0.75; margin: 2px 0 6px; }
.src-text { font-size: 0.86em; line-height: 1.45; white-space: pre-line; max-height: 220px;
            overflow-y: auto; }
.src-text mark { background: #fde68a; color: inherit; padding: 0 1px; border-radius: 2px; }
#ft-footer { font-size: 0.82em; opacity: 0.75; text-align: center; margin-top: 8px; }
"""

# A click on a citation [n] opens and scrolls to its card in the sources panel. Capture
# phase, so it runs before the chat's own link handling (which would open a new tab).
HEAD = r"""
<script>
document.addEventListener("click", function (event) {
  var link = event.target.closest ? event.target.closest('a[href^="#src-"]') : null;
  if (!link) return;
  event.preventDefault();
  event.stopPropagation();
  var card = document.getElementById(link.getAttribute("href").slice(1));
  if (!card) return;
  var details = card.closest("details");
  if (details) details.open = true;
  card.scrollIntoView({behavior: "smooth", block: "center"});
  card.classList.remove("flash");
  void card.offsetWidth;
  card.classList.add("flash");
  setTimeout(function () { card.classList.remove("flash"); }, 1600);
}, true);
// The chat's copy buttons copy a message's source; strip the citation links' markup so
// the clipboard gets plain text with [n] markers.
if (navigator.clipboard && navigator.clipboard.writeText) {
  var ftWrite = navigator.clipboard.writeText.bind(navigator.clipboard);
  navigator.clipboard.writeText = function (text) {
    if (typeof text === "string") {
      var box = document.createElement("textarea");
      box.innerHTML = text.replace(/<\/?(a|span)\b[^>]*>/g, "");
      text = box.value;
    }
    return ftWrite(text);
  };
}
</script>
"""


# --- Model warm-up ------------------------------------------------------------------------


class ModelLoader:
    """Loads generators in background threads and reports where each one stands."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings  # a model is loaded with these settings, only its name changed
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
            get_generator(self.settings.with_overrides(model=name))
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

    def describe(self, name: str) -> str:
        info = self._state.get(name)
        if info is None:
            return f"{name} (loads on first question)"
        if info["state"] == "ready":
            return f"{name} (ready)"
        if info["state"] == "error":
            return f"{name} (failed to load: {info['error']})"
        return f"{name} (loading… {time.perf_counter() - info['started']:.0f} s)"


# --- The page's state and pipeline calls -------------------------------------------------


class ChatApp:
    """Shared by every tab: the assistant (one index, one model cache) and the warm-up."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.settings = assistant.settings
        self.loader = ModelLoader(self.settings)
        self._variants: dict[tuple[str, int], Assistant] = {}
        self._variants_lock = threading.Lock()
        self.indexing = False
        self.embedder_ready = False

    def warm_up(self) -> None:
        """Embedder first (every question needs it), then the default model."""

        def run() -> None:
            try:
                self.assistant.retriever.embedder.encode(["warm up"])
                self.embedder_ready = True
            except Exception:
                log.exception("Warming up the embedder failed")
            self.loader.start(self.settings.model)

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
        self, assistant: Assistant, question: str, history: list[str], k: int | None
    ) -> Iterator[tuple[str, Any]]:
        """Run Assistant.stream in a worker and relay it: ("piece", str), ("answer", Answer),
        ("tick", seconds waited so far) while nothing new arrived, or ("error", exception).

        The worker lets the page keep showing a live status while the pipeline is blocked
        (a model still loading), and a closed tab stops the worker at the next piece.
        """
        items: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def work() -> None:
            iterator = assistant.stream(question, history, k)
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

    # Uploads -----------------------------------------------------------------------

    def add_documents(self, paths: list[str], progress=None) -> str:
        uploads = (self.settings.index_dir / "uploads").resolve()
        uploads.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        accepted: list[tuple[str, Path]] = []
        for i, path in enumerate(paths):
            original = display_name(Path(path).name)
            if progress:
                progress((i + 0.5) / (len(paths) + 2), desc=f"Checking {original}")
            problem = check_upload(Path(path))
            if problem:
                lines.append(f"**Rejected {html.escape(original)}:** {problem}")
                continue
            try:
                dest, duplicate = place_upload(Path(path), uploads)
            except (OSError, ValueError) as exc:
                lines.append(f"**Rejected {html.escape(original)}:** could not be stored "
                             f"({html.escape(str(exc))})")
                continue
            if duplicate:
                lines.append(f"**{html.escape(original)}** is already in the index (as {dest.name}).")
                continue
            accepted.append((original, dest))
        if not accepted:
            return "\n\n".join(lines) or "No files were given."

        if progress:
            progress(len(paths) / (len(paths) + 2), desc="Embedding and indexing the new documents")
        self.indexing = True
        try:
            index = open_index(self.settings, add_sources=[dest for _, dest in accepted], progress=True)
            empty = [(o, d) for o, d in accepted if not _chunks_from(index, d)]
            reasons = {d: _warning_for(index, d) for _, d in empty}
            if empty:
                for _, dest in empty:
                    dest.unlink(missing_ok=True)
                index = open_index(self.settings)  # drops the removed files again
            self.assistant.reload(index)
        except Exception as exc:
            log.exception("Indexing uploads failed")
            for _, dest in accepted:
                dest.unlink(missing_ok=True)
            lines.append(f"**Indexing failed** ({type(exc).__name__}: {html.escape(str(exc))}); "
                         "the index is unchanged.")
            return "\n\n".join(lines)
        finally:
            self.indexing = False
        for original, dest in accepted:
            count = _chunks_from(index, dest)
            if count:
                plural = "" if count == 1 else "s"
                lines.append(f"**Added {html.escape(original)}** as `{dest.name}`: "
                             f"{count} passage{plural} indexed.")
            else:
                why = reasons.get(dest) or "no readable text found in it."
                lines.append(f"**Rejected {html.escape(original)}:** {html.escape(why)}")
        if progress:
            progress(1.0, desc="Done")
        return "\n\n".join(lines)


def _warning_for(index, path: Path) -> str | None:
    """The loader's warning about this file (why it gave no text), without its full path."""
    name = display_path(path)
    for warning in index.manifest.get("warnings", []):
        if warning.startswith(name):
            return f"{path.name}{warning[len(name):]}"
    return None


def _chunks_from(index, path: Path) -> int:
    name = display_path(path)
    return sum(1 for c in index.chunks if c.source == name)


def check_upload(path: Path) -> str | None:
    """Why this file cannot be added, or None. The content decides, not only the name."""
    suffix = path.suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        kinds = ", ".join(sorted(UPLOAD_SUFFIXES))
        return f"unsupported file type '{html.escape(suffix or 'none')}' (use {kinds})"
    try:
        size = path.stat().st_size
    except OSError:
        return "the upload could not be read"
    if size == 0:
        return "the file is empty"
    if size > MAX_UPLOAD_BYTES:
        return f"too large ({size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB)"
    data = path.read_bytes()
    kind = UPLOAD_SUFFIXES[suffix]
    if kind == "pdf":
        return None if data.startswith(b"%PDF-") else "named .pdf but its content is not a PDF"
    if data.startswith(_BINARY_MAGIC) or b"\x00" in data[:8192]:
        return f"named {suffix} but its content is binary, not text"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    if kind == "html" and not _HTML_TAG.search(data[:16384]):
        return "named .html but contains no HTML markup"
    return None


def display_name(original: str) -> str:
    """A file name for messages: control and format characters (escapes, bidi overrides) removed."""
    shown = "".join(ch for ch in original if unicodedata.category(ch) not in ("Cc", "Cf"))
    return shown[:120] or "(unnamed)"


def safe_name(original: str) -> str:
    """A file name with no path, no leading dot and only [A-Za-z0-9._-]."""
    name = unicodedata.normalize("NFKC", original.replace("\\", "/").split("/")[-1])
    stem, suffix = os.path.splitext(name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80] or "document"
    suffix = suffix.lower() if suffix.lower() in UPLOAD_SUFFIXES else ".txt"
    return stem + suffix


def place_upload(source: Path, uploads: Path) -> tuple[Path, bool]:
    """Copy an upload into uploads/ under a safe, unused name; (path, already_present)."""
    name = safe_name(source.name)
    digest = sha256_file(source)
    stem, suffix = os.path.splitext(name)
    for attempt in range(1, 1000):
        dest = uploads / (name if attempt == 1 else f"{stem}-{attempt}{suffix}")
        if dest.is_symlink():
            continue  # not ours: never read or write through it
        if dest.resolve().parent != uploads:
            raise ValueError(f"unsafe upload name {name!r}")
        if dest.exists():
            if sha256_file(dest) == digest:
                return dest, True
            continue
        # Exclusive create of a fresh temp file: a symlink planted in uploads/ is never
        # followed (O_EXCL fails on any existing name, O_NOFOLLOW on links).
        tmp = uploads / f".{dest.name}.part"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
        os.replace(tmp, dest)
        return dest, False
    raise ValueError("too many uploads with the same name")


# --- Rendering ----------------------------------------------------------------------------


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def linked(text: str, turn_id: int) -> str:
    """Answer text, HTML-escaped, with every [n] a link to its card in the sources panel."""
    return _CITE.sub(
        lambda m: f'<a class="cite" href="#src-{turn_id}-{m.group(1)}" title="Show source {m.group(1)}">'
        f"[{m.group(1)}]</a>",
        _esc(text),
    )


def follow_up(passage: Passage) -> str:
    leaf = passage.chunk.heading_path[-1] if passage.chunk.heading_path else passage.chunk.title
    return f"Tell me about {leaf}"


def _source_label(passage: Passage) -> str:
    source = passage.chunk.source
    if os.path.isabs(source):
        source = ("uploads/" if "/uploads/" in source else "") + Path(source).name
    return f"{source} · {passage.chunk.location}"


def assistant_message(turn: dict) -> dict:
    answer: Answer | None = turn.get("answer")
    tid = turn["id"]
    if turn.get("error"):
        return {"role": "assistant", "content": f"**Error:** {turn['error']}"}
    if answer is None:
        text = linked(turn.get("text", ""), tid)
        note = turn.get("note", "")
        if text and note:
            return {"role": "assistant", "content": f"{text} ▍"}
        return {"role": "assistant", "content": text + (" ▍" if text else note or "…")}
    if not answer.answerable:
        sections = answer.passages
        content = "**The guide doesn't cover that.**"
        if sections:
            content += " The closest sections it has are below; pick one to ask about it instead."
        return {
            "role": "assistant",
            "content": content,
            "options": [{"value": follow_up(p), "label": p.chunk.title} for p in sections],
        }
    content = linked(answer.text, tid)
    if answer.citations:
        refs = " · ".join(
            f'<a class="cite" href="#src-{tid}-{c.n}">[{c.n}]</a> {_esc(c.passage.chunk.title)}'
            for c in answer.citations
        )
        content += f'\n\n<span class="ft-note">Sources: {refs}</span>'
    if answer.mode == "extractive":
        content += ('\n\n<span class="ft-note">Quoted directly from the guide: the model\'s own '
                    "wording could not be verified against the sources.</span>")
    return {"role": "assistant", "content": content}


def chat_messages(turns: list[dict]) -> list[dict]:
    messages: list[dict] = []
    for turn in turns:
        messages.append({"role": "user", "content": _esc(turn["question"])})
        messages.append(assistant_message(turn))
    return messages


def highlight(text: str, quotes: list[str]) -> str:
    """HTML-escaped passage text with each evidence quote wrapped in <mark>."""
    spans: list[tuple[int, int]] = []
    for quote in quotes:
        words = quote.split()
        if not words:
            continue
        match = re.search(r"\s+".join(re.escape(w) for w in words), text)
        if match:
            spans.append(match.span())
    spans.sort()
    out, position = [], 0
    for start, end in spans:
        if start < position:
            start = position
        if start >= end:
            continue
        out.append(_esc(text[position:start]))
        out.append(f"<mark>{_esc(text[start:end])}</mark>")
        position = end
    out.append(_esc(text[position:]))
    return "".join(out)


def _card(card_id: str, label: str, passage: Passage, quotes: list[str], cited: bool) -> str:
    meta = (f"{_esc(_source_label(passage))} · retrieval rank {passage.rank} · "
            f"similarity {passage.dense:.2f} · keyword {passage.keyword:.1f} · fused {passage.score:.4f}")
    return (
        f'<div class="src-card{"" if cited else " uncited"}" id="{card_id}">'
        f'<div class="src-head"><span class="src-n">{label}</span>{_esc(passage.chunk.title)}</div>'
        f'<div class="src-meta">{meta}</div>'
        f'<div class="src-text">{highlight(passage.chunk.text, quotes)}</div></div>'
    )


def sources_html(turns: list[dict], show_all: bool) -> str:
    done = [t for t in turns if t.get("answer") is not None]
    if not done:
        return ('<div class="src-empty">Sources for each answer appear here: the section of the guide, '
                "its file and line, the passage with the sentences the answer used highlighted, and its "
                "retrieval score. Click a citation [n] in an answer to jump to it.</div>")
    blocks = []
    for position, turn in enumerate(reversed(done)):
        answer: Answer = turn["answer"]
        tid = turn["id"]
        cards = []
        cited_ids = set()
        if answer.answerable:
            for c in answer.citations:
                cited_ids.add(c.passage.chunk.id)
                cards.append(_card(f"src-{tid}-{c.n}", f"[{c.n}]", c.passage, c.quotes, True))
            extra = [p for p in answer.passages if p.chunk.id not in cited_ids]
            if show_all and extra:
                cards.extend(_card(f"ret-{tid}-{p.rank}", f"#{p.rank}", p, [], False) for p in extra)
            elif extra:
                cards.append(f'<div class="src-empty">{len(extra)} more retrieved passage(s) not cited; '
                             "tick “Show all retrieved passages” to see them.</div>")
        else:
            cards.append('<div class="src-empty">Not covered by the guide. Closest sections:</div>')
            cards.extend(_card(f"ret-{tid}-{p.rank}", f"#{p.rank}", p, [], False) for p in answer.passages)
        summary = f"Sources for “{_esc(turn['question'][:90])}”"
        blocks.append(
            f'<details class="src-turn" id="turn-{tid}" {"open" if position == 0 else ""}>'
            f"<summary>{summary}</summary>{''.join(cards)}</details>"
        )
    return "".join(blocks)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, QuestionError):
        return str(exc)
    message = str(exc) or type(exc).__name__
    return (f"Sorry, something went wrong while answering ({_esc(type(exc).__name__)}: "
            f"{_esc(message[:400])}). The page still works: try again with the retry button "
            "or ask something else.")


# --- The page -----------------------------------------------------------------------------


def new_state() -> dict:
    return {"turns": [], "next_id": 1}


def build_app(assistant: Assistant) -> gr.Blocks:
    """The page for one Assistant. The model starts warming up in the background now."""
    app = ChatApp(assistant)
    settings = assistant.settings
    app.warm_up()
    models = generator_names()
    if settings.model not in models:
        models.insert(0, settings.model)

    with gr.Blocks(title="ftchat", analytics_enabled=False, fill_width=True) as demo:
        demo.ftchat = app  # for tests and the CLI
        state = gr.State(new_state())

        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}", elem_id="ft-header")
        status = gr.Markdown(app.status(), elem_id="ft-status")

        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                chatbot = gr.Chatbot(
                    elem_id="ft-chat",
                    label="Conversation",
                    height=600,
                    buttons=["copy", "copy_all"],
                    feedback_options=None,
                    placeholder=("**Ask a question about fine-tuning LLMs.**<br>"
                                 "Every answer cites the guide; click a [n] to see its source."),
                    examples=[{"text": q} for q in EXAMPLES],
                    latex_delimiters=[],
                    allow_tags=False,
                    autoscroll=True,
                )
                with gr.Row():
                    question = gr.Textbox(
                        elem_id="ft-question",
                        placeholder="e.g. What is the difference between LoRA and QLoRA?",
                        show_label=False,
                        lines=1,
                        max_lines=6,
                        scale=6,
                        autofocus=True,
                        submit_btn=False,
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="ft-send")
                    clear = gr.Button("Clear", variant="secondary", scale=1, min_width=80, elem_id="ft-clear")
            with gr.Column(scale=2, min_width=340):
                gr.Markdown("### Sources")
                show_all = gr.Checkbox(label="Show all retrieved passages, not only the cited ones",
                                       value=False, elem_id="ft-show-all")
                sources = gr.HTML(sources_html([], False), elem_id="ft-sources")
                with gr.Accordion("Settings", open=False, elem_id="ft-settings"):
                    model = gr.Dropdown(models, value=settings.model, label="Model",
                                        info="Takes effect on the next question; loads in the background.")
                    k = gr.Slider(1, 10, value=settings.top_k, step=1, label="Passages to retrieve (k)")
                    max_tokens = gr.Slider(40, 300, value=settings.max_new_tokens, step=10,
                                           label="Answer length (max new tokens)")
                with gr.Accordion("Add documents", open=False, elem_id="ft-upload"):
                    gr.Markdown(f"Markdown, text, PDF or HTML, up to {MAX_UPLOAD_BYTES // (1024 * 1024)} MB "
                                "each. They are copied into the index folder and searched with the guide.")
                    files = gr.File(file_count="multiple", file_types=sorted(UPLOAD_SUFFIXES),
                                    type="filepath", label="Documents", elem_id="ft-files")
                    add = gr.Button("Add to index", elem_id="ft-add")
                    upload_result = gr.Markdown(elem_id="ft-upload-result")

        gr.Markdown(FOOTER, elem_id="ft-footer")
        timer = gr.Timer(2.0)

        # --- handlers --------------------------------------------------------------

        def push(state: dict, text: str) -> bool:
            text = (text or "").strip()
            if not text:
                return False
            state["turns"].append({"id": state["next_id"], "question": text, "pending": True,
                                   "note": "Waiting for my turn…"})
            state["next_id"] += 1
            return True

        def submit(text: str, state: dict):
            push(state, text)
            return "", chat_messages(state["turns"]), state

        def pick_example(evt: gr.SelectData, state: dict):
            value = evt.value
            push(state, value.get("text", "") if isinstance(value, dict) else str(value))
            return chat_messages(state["turns"]), state

        def pick_option(evt: gr.SelectData, state: dict):
            push(state, str(evt.value))
            return chat_messages(state["turns"]), state

        def respond(state: dict, model_name: str, k_value: float, tokens: float, show: bool):
            pending = [t for t in state["turns"] if t.get("pending")]
            if not pending:
                yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
                return
            turn = pending[-1]
            index = state["turns"].index(turn)
            history = [t["question"] for t in state["turns"][:index]]
            try:
                chosen = app.assistant_for(model_name, int(tokens))
            except Exception as exc:
                turn.update(pending=False, error=error_text(exc))
                yield chat_messages(state["turns"]), state, sources_html(state["turns"], show), app.status()
                return
            turn.update(text="", note="Searching the guide…")
            yield chat_messages(state["turns"]), state, gr.skip(), app.status(model_name)
            for kind, value in app.stream(chosen, turn["question"], history, int(k_value)):
                if kind == "piece":
                    turn["text"] = turn.get("text", "") + value
                elif kind == "tick":
                    if turn.get("text"):
                        continue
                    if not app.loader.ready(chosen.settings.model):
                        turn["note"] = (f"The model is still loading ({value:.0f} s); your answer "
                                        "starts as soon as it is ready.")
                    else:
                        turn["note"] = f"Writing an answer from the guide… ({value:.0f} s)"
                elif kind == "answer":
                    turn.update(answer=value, text=value.text, pending=False)
                elif kind == "error":
                    turn.update(error=error_text(value), pending=False)
                yield chat_messages(state["turns"]), state, sources_html(state["turns"], show), \
                    app.status(model_name)
            if turn.get("pending"):  # the stream ended without an Answer
                turn.update(pending=False, error=turn.get("error") or "No answer was produced; please retry.")
                yield chat_messages(state["turns"]), state, sources_html(state["turns"], show), \
                    app.status(model_name)

        def retry(state: dict):
            if state["turns"]:
                last = state["turns"][-1]
                for key in ("answer", "error", "text"):
                    last.pop(key, None)
                last.update(pending=True, note="Waiting for my turn…")
            return chat_messages(state["turns"]), state

        def undo(state: dict, show: bool):
            text = state["turns"].pop()["question"] if state["turns"] else ""
            return text, chat_messages(state["turns"]), state, sources_html(state["turns"], show)

        def reset():
            fresh = new_state()
            return [], fresh, sources_html([], False), ""

        def add_files(paths, model_name, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's idiom)
            if not paths:
                return "Choose one or more files first.", app.status(model_name), None
            paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths]
            return app.add_documents(paths, progress), app.status(model_name), None

        answer_inputs = [state, model, k, max_tokens, show_all]
        answer_outputs = [chatbot, state, sources, status]
        answer_opts = dict(concurrency_id="pipeline", concurrency_limit=1, api_visibility="private",
                           show_progress="hidden")
        fast = dict(queue=False, api_visibility="private", show_progress="hidden")

        for trigger in (question.submit, send.click):
            trigger(submit, [question, state], [question, chatbot, state], **fast).then(
                respond, answer_inputs, answer_outputs, **answer_opts)
        chatbot.example_select(pick_example, [state], [chatbot, state], **fast).then(
            respond, answer_inputs, answer_outputs, **answer_opts)
        chatbot.option_select(pick_option, [state], [chatbot, state], **fast).then(
            respond, answer_inputs, answer_outputs, **answer_opts)
        chatbot.retry(retry, [state], [chatbot, state], **fast).then(
            respond, answer_inputs, answer_outputs, **answer_opts)
        chatbot.undo(undo, [state, show_all], [question, chatbot, state, sources], **fast)
        chatbot.clear(reset, None, [chatbot, state, sources, question], **fast)
        clear.click(reset, None, [chatbot, state, sources, question], **fast)
        show_all.change(lambda s, show: sources_html(s["turns"], show), [state, show_all], [sources], **fast)
        model.change(lambda name: (app.loader.start(name), app.status(name))[1], [model], [status], **fast)
        timer.tick(app.status, [model], [status], **fast)
        add.click(add_files, [files, model], [upload_result, status, files],
                  concurrency_id="pipeline", concurrency_limit=1, api_visibility="private")

        # A clean API for programs (gradio_client): streams {"answer": text so far, "done": False}
        # and finally {"done": True, **Answer.to_json()} with citations and passages.
        def ask(question: str, history: list[str] | None = None, k: int = 0) -> dict:
            text = ""
            for kind, value in app.stream(app.assistant, question, list(history or []), int(k) or None):
                if kind == "piece":
                    text += value
                    yield {"answer": text, "done": False}
                elif kind == "answer":
                    yield {"done": True, **value.to_json()}
                elif kind == "error":
                    yield {"done": True, "error": error_text(value), "answer": text}

        gr.api(ask, api_name="ask", concurrency_id="pipeline", concurrency_limit=1)

    return demo


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_auth(value: str) -> tuple[str, str]:
    """"user:password" (from --auth or FTCHAT_AUTH) as a (user, password) pair."""
    user, _, password = (value or "").partition(":")
    if not user.strip() or not password:
        raise ValueError("credentials must look like user:password (both parts non-empty)")
    return user.strip(), password


def auth_from_env() -> tuple[str, str] | None:
    value = os.environ.get("FTCHAT_AUTH", "")
    return parse_auth(value) if value else None


def exposure_warning(host: str, auth: tuple[str, str] | None, share: bool) -> str | None:
    """The loud warning for a page reachable by others without credentials, or None."""
    if auth:
        return None
    if share:
        where = "a public Gradio share link"
    elif host not in LOOPBACK_HOSTS:
        where = f"{host} (reachable from other machines)"
    else:
        return None
    bar = "!" * 78
    return (
        f"{bar}\n"
        f"WARNING: serving ftchat on {where} WITHOUT a password.\n"
        "Anyone who can reach it can use the assistant and add documents to your index.\n"
        "Use --auth user:password (or FTCHAT_AUTH=user:password), or bind 127.0.0.1.\n"
        f"{bar}"
    )


def launch(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    share: bool = False,
) -> None:
    """Load the index, start the model warm-up, and serve the page (blocking).

    Without `auth`, credentials come from FTCHAT_AUTH=user:password when it is set.
    """
    if auth is None:
        auth = auth_from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    limit_malloc_arenas()
    assistant = Assistant(settings)
    index = assistant.index  # builds it first when missing or stale
    log.info("Index ready: %d passages from %d documents (%.1f s)", len(index.chunks),
             len(index.manifest.get("files", {})), time.perf_counter() - started)
    demo = build_app(assistant)
    demo.queue(default_concurrency_limit=1)
    host = host or settings.host
    warning = exposure_warning(host, auth, share)
    if warning:
        log.warning("Serving on %s without --auth: anyone who can reach this address can use the page", host)
        print(warning, file=sys.stderr, flush=True)
    demo.launch(
        prevent_thread_lock=True,
        server_name=host,
        server_port=port or settings.port,
        auth=auth,
        share=share,
        inbrowser=False,
        show_error=True,
        max_file_size=MAX_UPLOAD_BYTES,
        footer_links=["api"],
        theme=gr.themes.Soft(primary_hue="indigo"),
        css=CSS,
        head=HEAD,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        ssr_mode=False,
    )
    print(f"ftchat page ready after {time.perf_counter() - started:.1f} s: {demo.local_url}", flush=True)
    demo.block_thread()
