"""Worksheets for a class: numbered questions, then an answer key with citations.

Markdown for editing, or a standalone HTML page that prints on A4 and on Letter: no fixed
page size (@page sets only margins, so the printer's paper decides), the answer key starts
on a new page, and no question or key entry is split across pages.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import date

from ftchat.study.answer_key import AnswerKey

FORMATS = ("md", "html")
CREDIT = (
    "Questions and answers from ftchat's guide, a rewrite of *Fine-Tuning Large Language Models - "
    "Key Concepts & terms and Strategies* by Abonia S. and Gurpreet K."
)


def render(keys: Sequence[AnswerKey], scope: Sequence[str], fmt: str = "md", day: date | None = None) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"Unknown worksheet format {fmt!r}; choose {' or '.join(FORMATS)}")
    day = day or date.today()
    return _markdown(keys, scope, day) if fmt == "md" else _html(keys, scope, day)


def _where(key: AnswerKey) -> list[str]:
    """Each cited place as 'heading path (file, line N)'."""
    return [
        f"{c['title']} ({c['source']}{', ' + c['location'] if c['location'] else ''})"
        for c in key.citations()
    ]


def _markdown(keys: Sequence[AnswerKey], scope: Sequence[str], day: date) -> str:
    lines = [
        "# Worksheet: fine-tuning LLMs",
        "",
        f"Topics: {'; '.join(scope) or 'the whole guide'}  ",
        f"Date: {day.isoformat()}",
        "",
        "Answer each question in your own words.",
        "",
    ]
    for n, key in enumerate(keys, 1):
        lines += [f"{n}. {key.question.prompt}", ""]
    lines += ["---", "", "## Answer key", ""]
    for n, key in enumerate(keys, 1):
        lines += [f"### {n}. {key.question.prompt}", "", "Key points:"]
        lines += [f"- **{p.label}**: {p.sentence.text}" for p in key.points]
        lines += ["", "From the guide: " + "; ".join(_where(key)), ""]
    lines += ["", f"_{CREDIT}_", ""]
    return "\n".join(lines)


STYLE = """
@page { margin: 18mm 16mm; }
body { font-family: Georgia, 'Times New Roman', serif; font-size: 11.5pt; line-height: 1.45;
       max-width: 46em; margin: 2em auto; padding: 0 1em; color: #111; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
.meta { color: #444; margin-top: 0; }
ol.questions > li { margin: 0 0 2.2em; break-inside: avoid; page-break-inside: avoid; }
.lines { border-bottom: 1px solid #bbb; height: 1.6em; }
section.key { break-before: page; page-break-before: always; }
section.key > div { break-inside: avoid; page-break-inside: avoid; margin-bottom: 1.1em; }
section.key h3 { font-size: 1em; margin: 0 0 0.3em; }
.where { color: #444; font-size: 0.9em; }
p, li { overflow-wrap: anywhere; }
footer { margin-top: 2em; color: #555; font-size: 0.85em; }
@media print { body { margin: 0; max-width: none; } }
"""


def _html(keys: Sequence[AnswerKey], scope: Sequence[str], day: date) -> str:
    e = html.escape
    questions = "\n".join(
        f"<li><p>{e(k.question.prompt)}</p>" + '<div class="lines"></div>' * 3 + "</li>" for k in keys
    )
    answers = "\n".join(
        f"<div><h3>{n}. {e(k.question.prompt)}</h3><ul>"
        + "".join(f"<li><strong>{e(p.label)}</strong>: {e(p.sentence.text)}</li>" for p in k.points)
        + f'</ul><p class="where">From the guide: {e("; ".join(_where(k)))}</p></div>'
        for n, k in enumerate(keys, 1)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Worksheet: fine-tuning LLMs</title>
<style>{STYLE}</style></head><body>
<h1>Worksheet: fine-tuning LLMs</h1>
<p class="meta">Topics: {e("; ".join(scope) or "the whole guide")} · {day.isoformat()}</p>
<p>Answer each question in your own words.</p>
<ol class="questions">
{questions}
</ol>
<section class="key"><h2>Answer key</h2>
{answers}
</section>
<footer>{e(CREDIT.replace("*", ""))}</footer>
</body></html>
"""
