"""The `ftchat` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .config import Settings
from .corpus import CorpusError
from .embedding import ModelNotAvailable
from .retrieval import QuestionError


def _settings(**overrides: object) -> Settings:
    return Settings().with_overrides(**overrides)


def read_questions(path: Path) -> list[str]:
    """One question per line, or JSON Lines rows with a "question" field."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise click.ClickException(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise click.ClickException(f'{path}:{number}: a JSON row needs a "question" string')
            questions.append(row["question"])
        else:
            questions.append(line)
    return questions


def _print_json(obj: object) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


class _Group(click.Group):
    """Turns the project's expected errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CorpusError, ModelNotAvailable, QuestionError) as exc:
            raise click.ClickException(str(exc)) from exc
        except PermissionError as exc:
            raise click.ClickException(f"Permission denied: {exc.filename} ({exc.strerror})") from exc


@click.group(cls=_Group)
@click.version_option(package_name="ftchat")
@click.option("-v", "--verbose", is_flag=True, help="Log what the pipeline is doing.")
def main(verbose: bool) -> None:
    """Answers questions about fine-tuning LLMs from a local guide, citing its sections.

    \b
    Examples:
      ftchat search "how do I balance a dataset with a rare class?"
      ftchat index --source ~/papers/lora.pdf
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option(
    "--source",
    "sources",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="An extra file or folder to index alongside the guide (repeatable; remembered).",
)
@click.option("--rebuild", is_flag=True, help="Rebuild even if the index is up to date.")
def index(sources: tuple[Path, ...], rebuild: bool) -> None:
    """Build or refresh the index of the guide (and any extra sources)."""
    from .index import open_index

    logging.getLogger("ftchat").setLevel(logging.INFO)
    built = open_index(_settings(), add_sources=list(sources), rebuild=rebuild, progress=True)
    m = built.manifest
    click.echo(
        f"Index: {len(m['files'])} documents, {m['chunks']} chunks, embedder {m['embedder']} "
        f"({m['embedded']} chunks embedded, built {m['built_at']}) in {built.path}"
    )
    for warning in m.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)


@main.command()
@click.argument("question", required=False)
@click.option("--k", default=5, show_default=True, type=click.IntRange(1, 50), help="Passages to return.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--questions",
    "questions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Search for every question in FILE (plain lines or JSONL); prints JSON Lines.",
)
def search(question: str | None, k: int, as_json: bool, questions_file: Path | None) -> None:
    """Show the guide sections that best match QUESTION."""
    from .api import Assistant

    if question is None and questions_file is None:
        raise click.UsageError("Give a QUESTION or --questions FILE.")
    assistant = Assistant(_settings())
    if questions_file is not None:
        for q in read_questions(questions_file):
            _print_json({"question": q, "passages": [p.to_json() for p in assistant.search(q, k)]})
        return
    passages = assistant.search(question, k)
    if as_json:
        _print_json({"question": question, "passages": [p.to_json() for p in passages]})
        return
    for p in passages:
        click.secho(f"[{p.rank}] {p.chunk.title}", bold=True)
        click.secho(f"    {p.chunk.source}, {p.chunk.location} · score {p.score:.4f}", dim=True)
        text = " ".join(p.chunk.text.split())
        click.echo(f"    {text[:300]}{'…' if len(text) > 300 else ''}\n")


if __name__ == "__main__":
    sys.exit(main())
