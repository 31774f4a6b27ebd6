"""How the page shows a conversation: chat messages with clickable citations, and the
sources panel's cards with the evidence highlighted. Pure functions of the turns; all
text is HTML-escaped here.

A turn is the page's record of one question: {"id", "question", "pending", "note",
"text" (streamed so far), "answer" (the final Answer), "error"}.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote as url_quote
from urllib.parse import unquote as url_unquote

from ftchat.answering.answer import Answer
from ftchat.answering.retrieval import Passage, QuestionError
from ftchat.answering.verify import CITATION_MARKERS
from ftchat.documents.book import SectionNotFound

GUIDE_LINK = "#guide="  # links that open a section in the Guide view (guideview.py)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def linked(text: str, turn_id: int) -> str:
    """Answer text, HTML-escaped, with every [n] a link to its card in the sources panel
    (a group [1, 2] becomes one link per number)."""

    def link(match: re.Match) -> str:
        space = match.group(0)[: match.group(0).index("[")]  # the pattern takes leading space
        return space + "".join(
            f'<a class="cite" href="#src-{turn_id}-{n}" title="Show source {n}">[{n}]</a>'
            for n in (int(x) for x in match.group(1).split(","))
        )

    return CITATION_MARKERS.sub(link, _esc(text))


def section_href(source: str, path: Sequence[str]) -> str:
    """The link to a section: the file it is in (any of the guide's files stands for the
    guide) and its heading path, percent-encoded so any heading survives the URL."""
    return GUIDE_LINK + url_quote(json.dumps([source, *path], ensure_ascii=False), safe="")


def parse_address(address: str) -> tuple[str, tuple[str, ...]]:
    """(source, heading path) from the part of a link after "#guide="."""
    try:
        value = json.loads(url_unquote(address))
    except ValueError:
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise SectionNotFound("That link does not name a section of the guide.")
    return value[0], tuple(value[1:])


def open_link(source: str, path: Sequence[str], title: str) -> str:
    """The "Open in the guide" link of a citation card or a closest section."""
    return (f'<a class="to-guide" href="{section_href(source, path)}" '
            f'aria-label="Open {html.escape(title)} in the guide">Open in the guide</a>')


def follow_up(passage: Passage) -> str:
    leaf = passage.chunk.heading_path[-1] if passage.chunk.heading_path else passage.chunk.title
    return f"Tell me about {leaf}"


def shown_source(source: str) -> str:
    """A chunk's source as the page shows it: an absolute path only by its file name."""
    if os.path.isabs(source):
        source = ("uploads/" if "/uploads/" in source else "") + Path(source).name
    return source


def _source_label(passage: Passage) -> str:
    return f"{shown_source(passage.chunk.source)} · {passage.chunk.location}"


def _guide_link(passage: Passage) -> str:
    chunk = passage.chunk
    return open_link(chunk.source, chunk.heading_path, chunk.title)


# A pending turn's status note ("Searching the guide…", "Checking the answer against the
# guide…") is wrapped in this class, so that what is answer text and what is status can be
# told apart in the page's own updates (`shown_answer_text`, used by `ftchat bench`).
PENDING_CLASS = "ft-pending"
_PENDING = re.compile(rf'<span class="{PENDING_CLASS}">.*?</span>', re.DOTALL)
_MARKUP = re.compile(r"<[^>]+>")
CURSOR = "▍"


def _pending(note: str) -> str:
    return f'<span class="{PENDING_CLASS}">{_esc(note or "…")}</span>'


def shown_answer_text(content: str) -> str:
    """The answer text in an assistant message's content as the page shows it: without the
    status note, the streaming cursor and the markup ("" while only a status shows)."""
    text = _MARKUP.sub("", _PENDING.sub("", content)).replace(CURSOR, "")
    return html.unescape(text).strip()


def assistant_message(turn: dict) -> dict:
    answer: Answer | None = turn.get("answer")
    tid = turn["id"]
    if turn.get("error"):
        return {"role": "assistant", "content": f"**Error:** {turn['error']}"}
    if answer is None:
        text = linked(turn.get("text", ""), tid)
        if text:  # verified text so far, and what is still going on below it
            return {"role": "assistant", "content": f"{text} {CURSOR}\n\n{_pending(turn.get('note', ''))}"}
        return {"role": "assistant", "content": _pending(turn.get("note", ""))}
    if not answer.answerable:
        sections = answer.passages
        content = "**The guide doesn't cover that.**"
        if sections:
            content += " The closest sections it has are below; pick one to ask about it instead."
            links = " · ".join(
                f'<a class="to-guide" href="{section_href(p.chunk.source, p.chunk.heading_path)}">'
                f"{_esc(p.chunk.title)}</a>" for p in sections)
            content += f'\n\n<span class="ft-note">Read them in the guide: {links}</span>'
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
    # What the message's copy button copies (ui.HEAD's clipboard hook reads it). Its line
    # breaks are character references: a blank line would end the HTML tag for the chat's
    # Markdown renderer, which then shows the rest of the attribute as text.
    copy = html.escape(answer_markdown(answer), quote=True).replace("\n", "&#10;")
    content += f'<span class="ft-copy" data-copy="{copy}"></span>'
    return {"role": "assistant", "content": content}


# --- Markdown for notes: copying an answer, downloading the conversation ----------------------


def answer_markdown(answer: Answer) -> str:
    """An answer as Markdown to paste into notes: its text with the [n] markers, then each
    citation spelled out as its heading path, file and location."""
    if not answer.answerable:
        return answer.text
    sources = [f"- [{c.n}] {c.passage.chunk.title} ({_source_label(c.passage)})" for c in answer.citations]
    return answer.text + ("\n\nSources:\n\n" + "\n".join(sources) if sources else "")


def conversation_markdown(turns: list[dict]) -> str:
    """Every answered question of a conversation, in order, as one Markdown document."""
    parts = ["# Conversation with ftchat\n"]
    for turn in turns:
        if turn.get("answer") is not None:
            parts.append(f"## {' '.join(turn['question'].split())}\n\n{answer_markdown(turn['answer'])}\n")
        elif turn.get("error"):
            parts.append(f"## {' '.join(turn['question'].split())}\n\n(No answer: {turn['error']})\n")
    return "\n".join(parts)


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
        f'<div class="src-meta">{meta} · {_guide_link(passage)}</div>'
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
