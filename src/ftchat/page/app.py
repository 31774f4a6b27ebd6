"""The Gradio page: its layout and what each control does.

    demo = build_app(Assistant(settings))   # serve.launch() serves it

Everything the page shows comes from `Assistant.stream()`, the same call the CLI uses,
through a ChatApp (chatapp.py: warm-up, worker, uploads); render.py turns the turns into
HTML. The page adds only what a browser needs: per-tab conversations (gr.State), one
queue so the model never runs twice at once, and a live status line.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ftchat.api import Assistant
from ftchat.documents.corpus import SUPPORTED_SUFFIXES
from ftchat.models.loader import generator_names
from ftchat.page.book_tab import CSS as GUIDE_CSS
from ftchat.page.book_tab import GuideControls, guide_tab, refresh_contents, wire_guide
from ftchat.page.chat import ChatApp
from ftchat.page.render import chat_messages, conversation_markdown, error_text, sources_html
from ftchat.page.study_tab import CSS as STUDY_CSS
from ftchat.page.study_tab import study_tab, wire_study
from ftchat.page.uploads import MAX_UPLOAD_BYTES

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
CREDIT = (
    "ftchat's guide is a rewrite of *Fine-Tuning Large Language Models - Key Concepts & terms "
    "and Strategies* by Abonia S. and Gurpreet K. (GitHub, 2024)."
)
EXAMPLES = [
    "What is QLoRA?",
    "How does gradient accumulation help when GPU memory is small?",
    "How can I avoid catastrophic forgetting?",
    "When is LoRA a better choice than full fine-tuning?",
]

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
/* Gradio sets the block's overflow inline, so without !important the cards of a long
   conversation spill out of the panel and run under the accordions and the footer. */
#ft-sources { max-height: min(640px, 75vh); overflow-y: auto !important; }
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
.ft-pending { font-size: 0.88em; opacity: 0.75; font-style: italic; }
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
// The chat's copy buttons copy a message's source. An answer carries its Markdown for
// notes (text, then its citations as heading paths; render.answer_markdown) in a
// data-copy attribute: copy that. Anything else: strip the links' markup.
if (navigator.clipboard && navigator.clipboard.writeText) {
  var ftWrite = navigator.clipboard.writeText.bind(navigator.clipboard);
  navigator.clipboard.writeText = function (text) {
    if (typeof text === "string") {
      var copies = new DOMParser().parseFromString(text, "text/html").querySelectorAll(".ft-copy");
      if (copies.length === 1) return ftWrite(copies[0].dataset.copy);
      var box = document.createElement("textarea");
      box.innerHTML = text.replace(/<span class="ft-copy"[^>]*><\/span>/g, "")
                          .replace(/<\/?(a|span)\b[^>]*>/g, "");
      text = box.value;
    }
    return ftWrite(text);
  };
}
</script>
"""


def launch_options() -> dict[str, Any]:
    """The page's look and limits, for Blocks.launch() (Gradio 6 takes them there)."""
    return dict(theme=gr.themes.Soft(primary_hue="indigo"), css=CSS + GUIDE_CSS + STUDY_CSS, head=HEAD,
                max_file_size=MAX_UPLOAD_BYTES, footer_links=["api"])


# --- Layout -------------------------------------------------------------------------------


@dataclass
class Controls:
    """The components the handlers read and write."""

    state: gr.State
    status: gr.Markdown
    chatbot: gr.Chatbot
    question: gr.Textbox
    send: gr.Button
    clear: gr.Button
    show_all: gr.Checkbox
    sources: gr.HTML
    model: gr.Dropdown
    k: gr.Slider
    max_tokens: gr.Slider
    files: gr.File
    add: gr.Button
    upload_result: gr.Markdown
    download: gr.DownloadButton
    timer: gr.Timer


def build_app(assistant: Assistant) -> gr.Blocks:
    """The page for one Assistant. The model starts warming up in the background now."""
    app = ChatApp(assistant)
    app.warm_up()
    # analytics_enabled=False covers everything Gradio would send (its version check and
    # usage reports are all gated on the Blocks' flag), so no environment variable is needed.
    with gr.Blocks(title="ftchat", analytics_enabled=False, fill_width=True) as demo:
        state = gr.State(new_state())
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}", elem_id="ft-header")
        status = gr.Markdown(app.status(), elem_id="ft-status")
        with gr.Tabs(selected="chat", elem_id="ft-tabs") as tabs:
            with gr.Tab("Chat", id="chat", elem_id="ft-chat-tab"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=420):
                        chat = _chat_column()
                    with gr.Column(scale=2, min_width=340):
                        side = _side_column(app)
            guide = guide_tab(app)
            study = study_tab(app)
        gr.Markdown(f"{FOOTER}\n\n{CREDIT}", elem_id="ft-footer")
        controls = Controls(state=state, status=status, **chat, **side, timer=gr.Timer(2.0))
        _wire_chat(app, controls)
        _wire_panel(app, controls, guide)
        wire_guide(app, guide, tabs)
        wire_study(app, study, demo)
        gr.api(_api(app), api_name="ask", concurrency_id="pipeline", concurrency_limit=1)
    return demo


def _chat_column() -> dict[str, Any]:
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
    download = gr.DownloadButton("Download the conversation (Markdown)", value=None, size="sm",
                                 variant="secondary", interactive=False, elem_id="ft-download")
    return dict(chatbot=chatbot, question=question, send=send, clear=clear, download=download)


def _side_column(app: ChatApp) -> dict[str, Any]:
    settings = app.settings
    models = generator_names()
    if settings.model not in models:
        models.insert(0, settings.model)
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
        files = gr.File(file_count="multiple", file_types=sorted(SUPPORTED_SUFFIXES),
                        type="filepath", label="Documents", elem_id="ft-files")
        add = gr.Button("Add to index", elem_id="ft-add")
        upload_result = gr.Markdown(elem_id="ft-upload-result")
    return dict(show_all=show_all, sources=sources, model=model, k=k, max_tokens=max_tokens,
                files=files, add=add, upload_result=upload_result)


# --- Event wiring -------------------------------------------------------------------------

# Quick state edits skip the queue; answering (and indexing uploads) share one queue slot.
FAST = dict(queue=False, api_visibility="private", show_progress="hidden")
PIPELINE = dict(concurrency_id="pipeline", concurrency_limit=1, api_visibility="private")


def _wire_chat(app: ChatApp, c: Controls) -> None:
    """Every way to ask (typing, an example, a follow-up option, retry) adds a pending turn,
    then the answer streams into it."""
    respond = _responder(app)
    answer_inputs = [c.state, c.model, c.k, c.max_tokens, c.show_all]
    answer_outputs = [c.chatbot, c.state, c.sources, c.status]

    def then_answer(event) -> None:
        answered = event.then(respond, answer_inputs, answer_outputs, show_progress="hidden", **PIPELINE)
        answered.then(conversation_file, [c.state], [c.download], **FAST)

    for trigger in (c.question.submit, c.send.click):
        then_answer(trigger(submit, [c.question, c.state], [c.question, c.chatbot, c.state], **FAST))
    then_answer(c.chatbot.example_select(pick_example, [c.state], [c.chatbot, c.state], **FAST))
    then_answer(c.chatbot.option_select(pick_option, [c.state], [c.chatbot, c.state], **FAST))
    then_answer(c.chatbot.retry(retry, [c.state], [c.chatbot, c.state], **FAST))
    c.chatbot.undo(undo, [c.state, c.show_all], [c.question, c.chatbot, c.state, c.sources], **FAST).then(
        conversation_file, [c.state], [c.download], **FAST)
    for clearing in (c.chatbot.clear, c.clear.click):
        clearing(reset, None, [c.chatbot, c.state, c.sources, c.question], **FAST).then(
            conversation_file, [c.state], [c.download], **FAST)


def _wire_panel(app: ChatApp, c: Controls, guide: GuideControls) -> None:
    """The sources toggle, the model choice, the status line and uploads (which the
    guide's contents then list)."""

    def add_files(paths, model_name, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's idiom)
        if not paths:
            return "Choose one or more files first.", app.status(model_name), None
        paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in paths]
        return app.add_documents(paths, progress), app.status(model_name), None

    def choose_model(name: str) -> str:
        app.loader.start(name)
        return app.status(name)

    c.show_all.change(lambda s, show: sources_html(s["turns"], show), [c.state, c.show_all], [c.sources],
                      **FAST)
    c.model.change(choose_model, [c.model], [c.status], **FAST)
    c.timer.tick(app.status, [c.model], [c.status], **FAST)
    c.add.click(add_files, [c.files, c.model], [c.upload_result, c.status, c.files], **PIPELINE).then(
        lambda: refresh_contents(app), None, [guide.contents], **FAST)


# --- Handlers -----------------------------------------------------------------------------


def new_state() -> dict:
    return {"turns": [], "next_id": 1}


def push(state: dict, text: str) -> bool:
    """Add a pending turn for this question (nothing for a blank one)."""
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
    return [], new_state(), sources_html([], False), ""


def conversation_file(state: dict):
    """The download button with this conversation as a Markdown file (off while empty)."""
    if not any(t.get("answer") is not None for t in state["turns"]):
        return gr.update(value=None, interactive=False)
    folder = Path(tempfile.mkdtemp(prefix="ftchat-download-"))
    path = folder / "ftchat-conversation.md"
    path.write_text(conversation_markdown(state["turns"]), encoding="utf-8")
    return gr.update(value=str(path), interactive=True)


def _responder(app: ChatApp):
    """The handler that answers the newest pending turn, streaming into the chat."""

    def respond(state: dict, model_name: str, k_value: float, tokens: float, show: bool):
        pending = [t for t in state["turns"] if t.get("pending")]
        if not pending:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        turn = pending[-1]
        earlier = state["turns"][: state["turns"].index(turn)]
        history = [t["question"] for t in earlier]
        answers = [t["text"] for t in earlier if t.get("text")]
        try:
            chosen = app.assistant_for(model_name, int(tokens))
        except Exception as exc:
            turn.update(pending=False, error=error_text(exc))
            yield chat_messages(state["turns"]), state, sources_html(state["turns"], show), app.status()
            return
        turn.update(text="", note="Searching the guide…")
        yield chat_messages(state["turns"]), state, gr.skip(), app.status(model_name)
        for kind, value in app.stream(chosen, turn["question"], history, int(k_value), answers):
            if kind == "tick" and turn.get("text"):
                continue
            _update_turn(turn, kind, value, model_ready=app.loader.ready(chosen.settings.model))
            yield chat_messages(state["turns"]), state, sources_html(state["turns"], show), \
                app.status(model_name)
        if turn.get("pending"):  # the stream ended without an Answer
            turn.update(pending=False, error=turn.get("error") or "No answer was produced; please retry.")
            yield chat_messages(state["turns"]), state, sources_html(state["turns"], show), \
                app.status(model_name)

    return respond


def _update_turn(turn: dict, kind: str, value: Any, model_ready: bool) -> None:
    """Apply one item of ChatApp.stream to the turn being answered."""
    if kind == "piece":
        turn["text"] = turn.get("text", "") + value
        # The guide's opening sentence is up; the model's wording is checked sentence by
        # sentence before any of it is added.
        turn["note"] = "Checking the answer against the guide…"
    elif kind == "tick":
        if not model_ready:
            turn["note"] = (f"The model is still loading ({value:.0f} s); your answer "
                            "starts as soon as it is ready.")
        else:
            turn["note"] = f"Writing an answer from the guide… ({value:.0f} s)"
    elif kind == "answer":
        turn.update(answer=value, text=value.text, pending=False)
    elif kind == "error":
        turn.update(error=error_text(value), pending=False)


def _api(app: ChatApp):
    """A clean API for programs (gradio_client): streams {"answer": text so far, "done": False}
    and finally {"done": True, **Answer.to_json()} with citations and passages."""

    def ask(question: str, history: list[str] | None = None, k: int = 0,
            earlier_answers: list[str] | None = None) -> dict:
        text = ""
        stream = app.stream(app.assistant, question, list(history or []), int(k) or None,
                            list(earlier_answers or []))
        for kind, value in stream:
            if kind == "piece":
                text += value
                yield {"answer": text, "done": False}
            elif kind == "answer":
                yield {"done": True, **value.to_json()}
            elif kind == "error":
                yield {"done": True, "error": error_text(value), "answer": text}

    return ask
