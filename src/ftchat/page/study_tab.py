"""The page's Study tab: a quiz over the guide, the learner's progress, and worksheets.

    study = study_tab(app)                # inside gr.Tabs, after the Guide tab
    wire_study(app, study, demo)

Everything comes from `Assistant.tutor()`, the API `ftchat quiz` uses too. The learner's
name is kept in the browser (gr.BrowserState), so a reload, or a new visit from the same
browser, finds the same progress; every browser session has its own name (a new one gets
"learner-" and a random suffix, which they may change). Nothing a learner types is ever
shown unescaped.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ftchat.page.chat import ChatApp
from ftchat.page.render import section_href
from ftchat.study.deck import UnknownSection
from ftchat.study.grading import AnswerError, Grade
from ftchat.study.progress import ProgressError, clean_learner
from ftchat.study.tutor import Pick, Tutor

STUDY_TAB = "study"
WHOLE, CHOSEN, WEAKEST = "The whole guide", "Chosen sections", "What I am weakest on"

CSS = """
#ft-study-question h3 { margin: 0.2em 0 0.4em; }
.study-where { font-size: 0.85em; opacity: 0.75; }
.study-grade { border-radius: 8px; padding: 10px 12px; border: 1px solid var(--border-color-primary); }
.study-grade.correct { border-left: 5px solid #16a34a; }
.study-grade.partial { border-left: 5px solid #d97706; }
.study-grade.wrong { border-left: 5px solid #dc2626; }
.study-grade ul { list-style: none; padding-left: 0.2em; margin: 0.4em 0; }
.study-grade li { margin: 0.25em 0; }
.study-point { font-weight: 600; }
.study-mark { display: inline-block; width: 1.2em; font-weight: 700; }
.study-mark.yes { color: #16a34a; } .study-mark.near { color: #d97706; } .study-mark.no { color: #dc2626; }
.study-quote { font-size: 0.9em; opacity: 0.85; }
.study-cites { font-size: 0.85em; opacity: 0.85; }
table.study-progress { width: 100%; border-collapse: collapse; font-size: 0.88em; }
table.study-progress th, table.study-progress td { text-align: left; padding: 3px 6px;
    border-bottom: 1px solid var(--border-color-primary); }
.study-bar { display: inline-block; height: 8px; border-radius: 4px; background: #6366f1;
             vertical-align: middle; }
"""


@dataclass
class StudyControls:
    learner: gr.Textbox
    remembered: gr.BrowserState
    scope: gr.Radio
    sections: gr.Dropdown
    question: gr.Markdown
    answer: gr.Textbox
    check: gr.Button
    dont_know: gr.Button
    next: gr.Button
    result: gr.HTML
    state: gr.State
    progress: gr.HTML
    export: gr.DownloadButton
    reset: gr.Button
    confirm_reset: gr.Button
    sheet_count: gr.Slider
    sheet_format: gr.Radio
    worksheet: gr.DownloadButton


def study_tab(app: ChatApp) -> StudyControls:
    """The Study tab (call inside gr.Tabs)."""
    # Not a secret: the browser keeps only a display name. A key fixed for this progress file
    # lets the name survive a restart of the page (Gradio draws a new key at every start).
    key = hashlib.sha256(str(app.settings.progress_file).encode()).hexdigest()
    with gr.Tab("Study", id=STUDY_TAB, elem_id="ft-study-tab"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=420):
                quiz = _quiz_column(app)
            with gr.Column(scale=2, min_width=320):
                side = _progress_column()
    return StudyControls(
        **quiz,
        **side,
        state=gr.State({"qid": None}),
        remembered=gr.BrowserState("", storage_key="ftchat-learner", secret=key),
    )


def _quiz_column(app: ChatApp) -> dict:
    with gr.Row():
        learner = gr.Textbox(
            label="Your name",
            elem_id="ft-learner",
            scale=1,
            info="Your progress is kept under this name, on this machine.",
        )
        scope = gr.Radio(
            [WHOLE, CHOSEN, WEAKEST], value=WHOLE, label="What to practise", elem_id="ft-study-scope", scale=2
        )
    sections = gr.Dropdown(
        [],
        multiselect=True,
        filterable=True,
        label="Sections (type to search)",
        elem_id="ft-study-sections",
        info="Parts, categories or single sections.",
    )
    question = gr.Markdown("", elem_id="ft-study-question")
    answer = gr.Textbox(
        lines=4, max_lines=12, label="Your answer, in your own words", elem_id="ft-study-answer"
    )
    with gr.Row():
        check = gr.Button("Check my answer", variant="primary", elem_id="ft-study-check")
        dont_know = gr.Button("I don't know", elem_id="ft-study-idk")
        next_question = gr.Button("Next question", elem_id="ft-study-next")
    result = gr.HTML("", elem_id="ft-study-result")
    return dict(
        learner=learner,
        scope=scope,
        sections=sections,
        question=question,
        answer=answer,
        check=check,
        dont_know=dont_know,
        next=next_question,
        result=result,
    )


def _progress_column() -> dict:
    gr.Markdown("### Your progress")
    progress = gr.HTML("", elem_id="ft-study-progress")
    with gr.Row():
        export = gr.DownloadButton(
            "Export my progress (CSV)", value=None, size="sm", elem_id="ft-study-export"
        )
        reset = gr.Button("Reset my progress", size="sm", variant="secondary", elem_id="ft-study-reset")
        confirm_reset = gr.Button(
            "Yes, forget my attempts",
            size="sm",
            variant="stop",
            visible=False,
            elem_id="ft-study-confirm-reset",
        )
    gr.Markdown(
        "### A worksheet for a class\nNumbered questions on the chosen sections (or the whole "
        "guide), then an answer key with each key point and where the guide states it."
    )
    with gr.Row():
        sheet_count = gr.Slider(3, 30, value=10, step=1, label="Questions", elem_id="ft-sheet-count")
        sheet_format = gr.Radio(["html", "md"], value="html", label="Format", elem_id="ft-sheet-format")
    worksheet = gr.DownloadButton("Download the worksheet", value=None, elem_id="ft-study-worksheet")
    return dict(
        progress=progress,
        export=export,
        reset=reset,
        confirm_reset=confirm_reset,
        sheet_count=sheet_count,
        sheet_format=sheet_format,
        worksheet=worksheet,
    )


# --- Rendering ----------------------------------------------------------------------------------

_e = html.escape


def question_markdown(pick: Pick | None, note: str = "") -> str:
    if pick is None:
        return f"No quiz questions there. {note}".strip()
    q = pick.question
    why = {"due": "back for review", "ahead": "nothing is due yet: practising ahead"}.get(pick.reason, "new")
    where = " · ".join([_e(q.section), why] + ([_e(note)] if note else []))
    return f"<p class='study-where'>{where}</p>\n\n### {_e(q.prompt)}"


def _mark(stated: bool, credit: float) -> str:
    # Plain symbols, not emoji: a machine without an emoji font shows emoji as boxes.
    kind, symbol, title = ("yes", "✓", "stated") if stated else (
        ("near", "≈", "close") if credit else ("no", "✗", "missed"))
    return f"<span class='study-mark {kind}' title='{title}'>{symbol}</span>"


def _place(c: dict) -> str:
    return _e(c["source"] + (f", {c['location']}" if c["location"] else ""))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def grade_html(grade: Grade) -> str:
    # Key points stated by one guide sentence share it: the sentence is shown once.
    by_sentence: dict[str, list] = {}
    for r in grade.results:
        by_sentence.setdefault(r.point.sentence.text, []).append(r)

    def marked(r) -> str:
        return f"{_mark(r.stated, r.credit)} <span class='study-point'>{_e(r.point.label)}</span>"

    points = "".join(
        "<li>" + " · ".join(marked(r) for r in results)
        + f"<br><span class='study-quote'>{_e(sentence)}</span></li>"
        for sentence, results in by_sentence.items()
    )
    key = grade.key
    cites = "".join(
        f"<li>[{c['n']}] {_e(c['title'])} ({_place(c)})"
        f" · <a class='to-guide' href='{_e(section_href(c['source'], c['title'].split(' › ')))}'>"
        "Open in the guide</a></li>"
        for c in key.citations()
    )
    headline = {"correct": "Correct", "partial": "Partly right", "wrong": "Not yet"}[grade.label]
    return (
        f"<div class='study-grade {grade.label}'><strong>{headline}: you stated {len(grade.stated)} of "
        f"{len(grade.results)} key points ({grade.score:.0%}).</strong><ul>{points}</ul>"
        f"<p><strong>The guide's answer:</strong> {_e(key.answer_text())}</p>"
        f"<ul class='study-cites'>{cites}</ul></div>"
    )


def progress_html(tutor: Tutor, learner: str) -> str:
    try:
        rows = tutor.mastery(learner)
    except ProgressError as exc:
        return f"<p class='study-where'>{_e(str(exc))}</p>"
    if not rows:
        return f"<p class='study-where'>No answers yet from <b>{_e(learner)}</b>.</p>"

    def link(section: str) -> str:
        return _e(section_href(tutor.section_source(section), section.split(" › ")))

    body = "".join(
        f"<tr><td><a class='to-guide' href='{link(r.section)}'>"
        f"{_e(r.section.split(' › ')[-1])}</a></td><td>{r.answered}/{r.questions}</td>"
        f"<td><span class='study-bar' style='width:{max(2, round(r.mastery * 60))}px'></span> "
        f"{r.mastery:.0%}</td><td>{r.due}</td></tr>"
        for r in rows
    )
    total = sum(r.answered for r in rows)
    return (
        f"<p class='study-where'><b>{_e(learner)}</b>: {_count(total, 'question')} answered in "
        f"{_count(len(rows), 'section')}."
        "</p><table class='study-progress'><thead><tr><th>Section</th><th>Answered</th><th>Mastery</th>"
        f"<th>Due</th></tr></thead><tbody>{body}</tbody></table>"
    )


# --- Handlers -----------------------------------------------------------------------------------

# Files behind the download buttons (Gradio copies each into its own cache when shown): one
# folder per user, each file in a folder of its own so that sessions never overwrite each
# other's; folders older than DOWNLOADS_KEPT go when a new file is written.
DOWNLOADS_KEPT_S = 3600


def _download(name: str, text: str) -> str:
    root = Path(tempfile.gettempdir()) / f"ftchat-study-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - DOWNLOADS_KEPT_S
    for old in root.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(dir=root)) / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _titles(scope: str, sections: list[str] | None) -> tuple[list[str], bool]:
    return (list(sections or []) if scope == CHOSEN else []), scope == WEAKEST


def new_learner_name() -> str:
    return f"learner-{secrets.token_hex(2)}"


def _learner(name: str | None, remembered: str | None = None) -> str:
    """The name as `ftchat quiz --learner` stores it (progress.clean_learner), so a learner
    is the same on the page and in the terminal; a cleared box keeps the remembered name."""
    return clean_learner(name) if (name or "").strip() else (remembered or new_learner_name())


def _next(app: ChatApp, learner: str, scope: str, sections: list[str] | None, state: dict):
    """(question, answer box, result, state) for the next question in this scope."""
    tutor = app.assistant.tutor()
    titles, weakest = _titles(scope, sections)
    note = ""
    if scope == CHOSEN and not titles:
        note = "choose sections above, or practise the whole guide"
    try:
        if weakest and not tutor.weakest_sections(learner):
            note = "answer a few questions first: until then, questions from the whole guide"
        pick = tutor.next_question(learner, titles, weakest, after=state.get("qid"))
    except (UnknownSection, ProgressError) as exc:
        return _e(str(exc)), "", "", {"qid": None}  # "Check" must not grade a question not shown
    return question_markdown(pick, note), "", "", {"qid": pick.question.id if pick else None}


def _answered(app: ChatApp, learner: str, qid: str | None, answer: str | None):
    """(result, progress, export file) after an answer (None: "I don't know")."""
    tutor = app.assistant.tutor()
    if not qid:
        return "<p>Press <b>Next question</b> first.</p>", gr.skip(), gr.skip()
    try:
        grade = tutor.dont_know(qid) if answer is None else tutor.grade(qid, answer)
    except AnswerError as exc:
        return f"<p>{_e(str(exc))}</p>", gr.skip(), gr.skip()
    try:
        tutor.record(learner, grade)
    except ProgressError as exc:  # the grade is shown all the same, only not saved
        return grade_html(grade) + f"<p>{_e(str(exc))}</p>", gr.skip(), gr.skip()
    return grade_html(grade), progress_html(tutor, learner), _export_file(tutor, learner)


def _export_file(tutor: Tutor, learner: str) -> str | None:
    try:
        text = tutor.export_csv(learner)
    except ProgressError:
        return None
    safe = re.sub(r"[^\w\-]+", "_", learner).strip("_") or "learner"
    return _download(f"ftchat-progress-{safe}.csv", text) if text.count("\n") > 1 else None


def _worksheet_file(app: ChatApp, scope: str, sections: list[str] | None, count: float, fmt: str):
    titles, _ = _titles(scope, sections)
    try:
        text = app.assistant.tutor().worksheet(titles, int(count), fmt)
    except UnknownSection:
        return None
    return _download(f"ftchat-worksheet.{fmt}", text)


STUDY = dict(concurrency_id="study", concurrency_limit=4, api_visibility="private", show_progress="hidden")


def wire_study(app: ChatApp, c: StudyControls, demo: gr.Blocks) -> None:
    _wire_learner(app, c, demo)
    _wire_quiz(app, c)
    _wire_reset(app, c)
    sheet_inputs = [c.scope, c.sections, c.sheet_count, c.sheet_format]
    triggers = (c.scope.change, c.sections.change, c.sheet_count.release, c.sheet_format.change, demo.load)
    for trigger in triggers:
        trigger(lambda *v: _worksheet_file(app, *v), sheet_inputs, [c.worksheet], **STUDY)


def _wire_learner(app: ChatApp, c: StudyControls, demo: gr.Blocks) -> None:
    """The name the browser remembers (a new one for a new browser), and its progress."""

    def start(remembered: str):
        name = _learner(remembered)
        tutor = app.assistant.tutor()
        return (name, name, gr.Dropdown(choices=tutor.headings()), progress_html(tutor, name),
                _export_file(tutor, name))

    def rename(name: str, remembered: str):
        name = _learner(name, remembered)
        tutor = app.assistant.tutor()
        return name, name, progress_html(tutor, name), _export_file(tutor, name)

    demo.load(start, [c.remembered], [c.learner, c.remembered, c.sections, c.progress, c.export], **STUDY)
    named = [c.learner, c.remembered, c.progress, c.export]
    c.learner.blur(rename, [c.learner, c.remembered], named, **STUDY)


def _wire_quiz(app: ChatApp, c: StudyControls) -> None:
    def ask_next(learner: str, remembered: str, scope: str, sections: list[str] | None, state: dict):
        return _next(app, _learner(learner, remembered), scope, sections, state)

    def check(learner: str, remembered: str, state: dict, answer: str):
        return _answered(app, _learner(learner, remembered), state.get("qid"), answer)

    def dont_know(learner: str, remembered: str, state: dict):
        return _answered(app, _learner(learner, remembered), state.get("qid"), None)

    next_inputs = [c.learner, c.remembered, c.scope, c.sections, c.state]
    next_outputs = [c.question, c.answer, c.result, c.state]
    for trigger in (c.next.click, c.scope.change, c.sections.change):
        trigger(ask_next, next_inputs, next_outputs, **STUDY)
    graded = [c.result, c.progress, c.export]
    c.check.click(check, [c.learner, c.remembered, c.state, c.answer], graded, **STUDY)
    c.dont_know.click(dont_know, [c.learner, c.remembered, c.state], graded, **STUDY)


def _wire_reset(app: ChatApp, c: StudyControls) -> None:
    """Reset asks first: the button shows a second one that forgets."""

    def forget(learner: str, remembered: str):
        tutor, name = app.assistant.tutor(), _learner(learner, remembered)
        try:
            tutor.reset(name)
        except ProgressError as exc:
            return gr.Button(visible=True), gr.Button(visible=False), f"<p>{_e(str(exc))}</p>", gr.skip()
        shown = progress_html(tutor, name)
        return gr.Button(visible=True), gr.Button(visible=False), shown, None

    def ask_first():
        return gr.Button(visible=False), gr.Button(visible=True)

    c.reset.click(ask_first, None, [c.reset, c.confirm_reset], queue=False, api_visibility="private")
    c.confirm_reset.click(forget, [c.learner, c.remembered], [c.reset, c.confirm_reset, c.progress, c.export],
                          **STUDY)
