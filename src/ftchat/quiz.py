"""`ftchat quiz`: practise with the guide in the terminal, print worksheets, and the JSON
contract for automation (`quiz questions`, `quiz grade`). A thin layer over Assistant.tutor().

    ftchat quiz --section LoRA --section QLoRA       # answer questions, graded as you go
    ftchat quiz --weakest                            # the sections you know least
    ftchat quiz --progress                           # per-section mastery
    ftchat quiz worksheet "Training process" --count 8 --format html -o sheet.html
    ftchat quiz questions --section QLoRA --count 3 --json
    ftchat quiz grade --id q1a2b3c4d --answer "It quantizes the base to 4 bits" --json
"""

from __future__ import annotations

import csv
import getpass
import io
import json
from dataclasses import dataclass
from pathlib import Path

import click

from ftchat.config import Settings
from ftchat.files import write_text_atomically
from ftchat.study.deck import UnknownQuestion, UnknownSection
from ftchat.study.grading import AnswerError, Grade
from ftchat.study.progress import ProgressError
from ftchat.study.worksheet import FORMATS


class BadInput(click.ClickException):
    """A question id, section title or answer the quiz cannot use: one line, exit status 2."""

    exit_code = 2


def _tutor():
    from ftchat.api import Assistant

    return Assistant(Settings()).tutor()


def _checked(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except (UnknownQuestion, UnknownSection, AnswerError) as exc:
        raise BadInput(str(exc)) from exc
    except ProgressError as exc:
        raise click.ClickException(str(exc)) from exc


def default_learner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "learner"


SECTION_OPTION = click.option(
    "--section",
    "sections",
    multiple=True,
    metavar="TITLE",
    help="A part, category or section to practise (repeatable; default: all).",
)
LEARNER_OPTION = click.option("--learner", default=None, help="Whose progress (default: your user name).")


@click.group(invoke_without_command=True)
@SECTION_OPTION
@click.option("--weakest", is_flag=True, help="Practise the sections you have scored lowest on.")
@click.option("--count", type=click.IntRange(1, 200), default=None,
              help="Stop after N questions (a worksheet's: 10).")
@LEARNER_OPTION
@click.option("--progress", "show_progress", is_flag=True, help="Show per-section mastery and stop.")
@click.option(
    "--worksheet",
    "worksheet_titles",
    multiple=True,
    metavar="TITLE",
    help="Print a worksheet on these sections instead (repeatable; see `quiz worksheet`).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", help="Worksheet format.")
@click.option(
    "--export",
    "export_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write your attempts as CSV to FILE ('-' for the terminal) and stop.",
)
@click.option("--reset", is_flag=True, help="Forget your attempts and schedule (asks first).")
@click.pass_context
def quiz(
    ctx: click.Context,
    sections: tuple[str, ...],
    weakest: bool,
    count: int | None,
    learner: str | None,
    show_progress: bool,
    worksheet_titles: tuple[str, ...],
    fmt: str,
    export_to: Path | None,
    reset: bool,
) -> None:
    """Practise with the guide: answer its questions in your own words, graded on its key points.

    Missed questions come back sooner, known ones later (your progress is kept in a local
    SQLite file). Type '?' for "I don't know", 'q' or Ctrl-D to stop.
    """
    if ctx.invoked_subcommand is not None:
        return
    modes = [name for name, given in (("--worksheet", worksheet_titles), ("--progress", show_progress),
                                       ("--export", export_to is not None), ("--reset", reset)) if given]
    if len(modes) > 1:
        raise click.UsageError(f"Give one of {', '.join(modes)}, not several.")
    if modes and modes != ["--worksheet"] and (sections or weakest):
        raise click.UsageError(f"{modes[0]} takes no --section or --weakest: it covers all your attempts.")
    mode = Mode(list(sections), weakest, count, show_progress, worksheet_titles, fmt, export_to, reset)
    _checked(_run, learner or default_learner(), mode)


@dataclass(frozen=True)
class Mode:
    """What `ftchat quiz` without a subcommand was asked to do."""

    sections: list[str]
    weakest: bool
    count: int | None
    show_progress: bool
    worksheet_titles: tuple[str, ...]
    fmt: str
    export_to: Path | None
    reset: bool


def _run(learner: str, mode: Mode) -> None:
    tutor = _tutor()
    if mode.worksheet_titles:
        titles = [*mode.worksheet_titles, *mode.sections]
        click.echo(tutor.worksheet(titles, mode.count or 10, mode.fmt), nl=False)
    elif mode.show_progress:
        _print_progress(tutor, learner)
    elif mode.export_to is not None:
        _export(tutor, learner, mode.export_to)
    elif mode.reset:
        click.confirm(f"Forget every attempt of {learner!r}?", abort=True)
        click.echo(f"Forgot {tutor.reset(learner)} attempts of {learner!r}.")
    else:
        _practise(tutor, learner, mode.sections, mode.weakest, mode.count)


def _practise(tutor, learner: str, sections: list[str], weakest: bool, count: int | None) -> None:
    tutor.resolve(sections)  # a mistyped title fails before the first question
    click.echo(f"Quiz for {learner}: answer in your own words ('?' = I don't know, 'q' = stop).")
    asked, last = 0, None
    while count is None or asked < count:
        pick = tutor.next_question(learner, sections, weakest, after=last)
        if pick is None:
            click.echo("No quiz questions in that part of the guide.")
            return
        q = pick.question
        note = {"due": "back for review", "ahead": "nothing is due: practising ahead"}.get(pick.reason, "new")
        click.echo(f"\n{click.style(q.section, dim=True)} ({note})\n{click.style(q.prompt, bold=True)}")
        answer = _read_answer()
        if answer is None:
            break
        _print_grade(tutor.dont_know(q.id, learner) if answer == "?" else tutor.grade(q.id, answer, learner))
        asked, last = asked + 1, q.id
    click.echo(f"\n{asked} answered. `ftchat quiz --progress` shows how you stand.")


def _read_answer() -> str | None:
    while True:
        try:
            answer = click.prompt(
                click.style("your answer", bold=True), prompt_suffix="> ", default="", show_default=False
            )
        except (EOFError, click.Abort):
            click.echo()
            return None
        if answer.strip().lower() in {"q", "quit", "exit"}:
            return None
        if answer.strip():
            return answer.strip()
        click.echo("Write an answer, '?' for I don't know, or 'q' to stop.")


def _print_grade(grade: Grade) -> None:
    color = {"correct": "green", "partial": "yellow", "wrong": "red"}[grade.label]
    click.secho(f"{grade.label.capitalize()}: {grade.score:.0%} of the key points", fg=color, bold=True)
    for r in grade.results:
        mark = "✓" if r.stated else ("~" if r.credit else "✗")
        click.echo(f"  {mark} {r.point.label}")
    click.echo("The guide's answer: " + grade.key.answer_text())
    for c in grade.key.citations():
        click.echo(
            f"  [{c['n']}] {c['title']} ({c['source']}{', ' + c['location'] if c['location'] else ''})"
        )


def _print_progress(tutor, learner: str) -> None:
    rows = tutor.mastery(learner)
    if not rows:
        click.echo(f"No attempts yet for {learner!r}: `ftchat quiz` starts.")
        return
    click.echo(f"Progress of {learner} ({sum(r.answered for r in rows)} questions answered):")
    width = min(70, max(len(r.section) for r in rows))
    click.echo(f"{'section':<{width}}  answered  mastery  due")
    for r in rows:
        title = r.section if len(r.section) <= width else "…" + r.section[-(width - 1) :]
        click.echo(f"{title:<{width}}  {r.answered:>3}/{r.questions:<4}  {r.mastery:>6.0%}  {r.due:>3}")


def _export(tutor, learner: str, path: Path) -> None:
    text = tutor.export_csv(learner)
    attempts = sum(1 for _ in csv.reader(io.StringIO(text))) - 1  # an answer may span lines
    _deliver(text, None if str(path) == "-" else path, f"{attempts} attempts of {learner!r}")


def _deliver(text: str, path: Path | None, what: str) -> None:
    """Print text, or write it to path (atomically) and say so."""
    if path is None:
        click.echo(text, nl=False)
        return
    write_text_atomically(path, text)
    click.echo(f"Wrote {what} to {path}")


@quiz.command()
@SECTION_OPTION
@click.option("--count", type=click.IntRange(1, 10_000), default=None, help="At most N questions.")
@click.option("--seed", type=int, default=None, help="Same seed, same questions in the same order.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='One JSON object per line: {"id", "question", "section", "style"}.',
)
def questions(sections: tuple[str, ...], count: int | None, seed: int | None, as_json: bool) -> None:
    """List quiz questions, spread over the sections asked for."""
    for q in _checked(_tutor().questions, list(sections), count, seed):
        click.echo(json.dumps(q.to_json(), ensure_ascii=False) if as_json else f"{q.id}  {q.prompt}")


@quiz.command()
@click.option("--id", "qid", required=True, help="The question's id (from `quiz questions`).")
@click.option("--answer", required=True, help="The answer to grade.")
@LEARNER_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the grade as one JSON object.")
def grade(qid: str, answer: str, learner: str | None, as_json: bool) -> None:
    """Grade an answer to one question (saved to progress only with --learner)."""
    result = _checked(_tutor().grade, qid, answer, learner)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        click.echo(result.key.question.prompt)
        _print_grade(result)


@quiz.command()
@click.argument("sections", nargs=-1, required=True, metavar="SECTION...")
@click.option("--count", type=click.IntRange(1, 200), default=10, show_default=True, help="Questions.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True)
@click.option("--seed", type=int, default=None, help="Same seed, same worksheet.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
def worksheet(sections: tuple[str, ...], count: int, fmt: str, seed: int | None, output: Path | None) -> None:
    """A worksheet on SECTION...: numbered questions, then the answer key with citations."""
    text = _checked(_tutor().worksheet, list(sections), count, fmt, seed)
    _deliver(text, output, "the worksheet")
