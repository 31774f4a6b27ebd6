"""The `ftchat` command: a thin layer over the Python API."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from ftchat.answering.retrieval import QuestionError
from ftchat.config import Settings, SettingsError, parse_auth
from ftchat.documents.corpus import CorpusError
from ftchat.files import read_lines
from ftchat.models.presets import ModelNotAvailable
from ftchat.quiz import quiz


def _settings(**overrides: object) -> Settings:
    return Settings().with_overrides(**overrides)


def read_questions(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, question, error) for each non-blank line of a questions file: one
    question per line, or JSON Lines rows with a "question" field."""
    for line in read_lines(path, plain_text=True):
        row = line.value
        if isinstance(row, dict) and isinstance(row.get("question"), str):
            yield line.number, row["question"], None
        elif isinstance(row, str):
            yield line.number, row, None
        else:
            yield line.number, None, line.error or 'a JSON row needs a "question" string'


def _answer_each(path: Path, answer: Callable[[str], dict]) -> None:
    """One JSON line per row, in order: answer(question), or the row's error. A bad row
    fails alone; the exit status says whether any did."""
    failed = total = 0
    for number, question, error in read_questions(path):
        total += 1
        if question is not None:
            try:
                _print_json(answer(question))
                continue
            except QuestionError as exc:
                error = str(exc)
        failed += 1
        _print_json({"question": question, "error": error, "line": number})
    if total == 0:
        raise click.ClickException(f"{path} has no questions")
    if failed:
        click.echo(f"{failed} of {total} rows failed", err=True)
        sys.exit(1)


def _print_json(obj: object) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


class _Group(click.Group):
    """Turns the project's expected errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (CorpusError, ModelNotAvailable, QuestionError, SettingsError) as exc:
            raise click.ClickException(str(exc)) from exc
        except PermissionError as exc:
            raise click.ClickException(f"Permission denied: {exc.filename} ({exc.strerror})") from exc
        except OSError as exc:  # a folder that is not writable, a path through a file, a full disk
            if exc.filename is None:
                raise
            raise click.ClickException(f"Cannot use {exc.filename}: {exc.strerror}") from exc


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
    from ftchat.index.store import open_index

    logging.getLogger("ftchat").setLevel(logging.INFO)
    previous_build = _current_build(_settings())
    built = open_index(_settings(), add_sources=list(sources), rebuild=rebuild, progress=True)
    m = built.manifest
    click.echo(
        f"Index: {len(m['files'])} documents, {m['chunks']} chunks, embedder {m['embedder']} "
        f"({m['embedded']} chunks embedded, built {m['built_at']}) in {built.path}"
    )
    if built.path is not None and built.path.name == previous_build:
        # Not rebuilt now, so the build's warnings were not logged above: repeat them.
        for warning in m.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)


def _current_build(settings: Settings) -> str | None:
    pointer = settings.index_dir / "CURRENT"
    return pointer.read_text(encoding="utf-8", errors="replace").strip() if pointer.is_file() else None


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
    from ftchat.api import Assistant

    if question is None and questions_file is None:
        raise click.UsageError("Give a QUESTION or --questions FILE.")
    assistant = Assistant(_settings())
    if questions_file is not None:
        _answer_each(
            questions_file,
            lambda q: {"question": q, "passages": [p.to_json() for p in assistant.search(q, k)]},
        )
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


def _print_sources(answer) -> None:
    if not answer.answerable:
        return
    for c in answer.citations:
        click.secho(f"  [{c.n}] {c.passage.chunk.title}", bold=True)
        click.secho(f"      {c.passage.chunk.source}, {c.passage.chunk.location}", dim=True)


def _stream_answer(assistant, question: str, history: list[str], k: int | None,
                   earlier_answers: list[str] | None = None):
    """Print verified pieces as they arrive; return the final Answer."""
    from ftchat.answering.answer import Answer

    for item in assistant.stream(question, history, k, earlier_answers):
        if isinstance(item, Answer):
            click.echo()
            _print_sources(item)
            return item
        click.echo(item, nl=False)
    raise RuntimeError("the answer stream ended without an answer")


@main.command()
@click.argument("question", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per question.")
@click.option("--model", default=None, help="Model preset, local folder or hub id (default: FTCHAT_MODEL).")
@click.option("--k", default=None, type=click.IntRange(1, 50), help="Passages to retrieve (default 5).")
@click.option(
    "--questions",
    "questions_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Answer every question in FILE (plain lines or JSONL); prints JSON Lines.",
)
def ask(question: str | None, as_json: bool, model: str | None, k: int | None,
        questions_file: Path | None) -> None:
    """Answer QUESTION from the guide, with citations [n] to its sections."""
    from ftchat.api import Assistant

    if question is None and questions_file is None:
        raise click.UsageError("Give a QUESTION or --questions FILE.")
    assistant = Assistant(_settings(model=model))
    if questions_file is not None:
        _answer_each(questions_file, lambda q: assistant.ask(q, k=k).to_json())
        return
    if as_json:
        _print_json(assistant.ask(question, k=k).to_json())
        return
    _stream_answer(assistant, question, [], k)


@main.command()
@click.option("--model", default=None, help="Model preset, local folder or hub id.")
def chat(model: str | None) -> None:
    """A conversation in the terminal; follow-up questions keep their context.

    Type 'exit' or press Ctrl-D to leave, '/reset' to start a new conversation.
    """
    from ftchat.api import Assistant

    assistant = Assistant(_settings(model=model))
    index = assistant.index
    click.echo(
        f"ftchat: {len(index.manifest['files'])} documents, {len(index)} chunks; "
        f"model {assistant.settings.model}. Ask about fine-tuning LLMs ('exit' to leave)."
    )
    history: list[str] = []
    answers: list[str] = []
    while True:
        try:
            question = click.prompt(click.style("you", bold=True), prompt_suffix="> ")
        except (EOFError, click.Abort):
            click.echo()
            return
        if question.strip().lower() in {"exit", "quit", "/exit"}:
            return
        if question.strip() == "/reset":
            history, answers = [], []
            click.echo("(new conversation)")
            continue
        try:
            answer = _stream_answer(assistant, question, history, None, answers)
        except QuestionError as exc:
            click.secho(str(exc), fg="red")
            continue
        history.append(question)
        answers.append(answer.text)


@main.command(name="eval")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--retrieval-only", is_flag=True, help="Skip answering (fast: retrieval and gate only).")
@click.option("--calibrate", is_flag=True,
              help="Refit the gate's threshold on the FILES (your own questions) and save it; "
                   "the shipped one is fitted on train/ by `ftchat calibrate`.")
@click.option("--model", default=None, help="Model preset, local folder or hub id.")
def eval_command(files: tuple[Path, ...], as_json: bool, retrieval_only: bool, calibrate: bool,
                 model: str | None) -> None:
    """Measure retrieval, the not-covered gate and answers on an eval set (JSONL).

    Without FILES, runs the project's own eval set (eval/eval.jsonl). Several FILES are
    read as one set.
    """
    from dataclasses import asdict

    from ftchat.answering import gate
    from ftchat.api import Assistant
    from ftchat.tools import evaluation as ev

    paths = list(files) or [ev.DEFAULT_EVAL_FILE]
    try:
        rows = [row for path in paths for row in ev.load_rows(path)]
    except ev.EvalFileError as exc:
        raise click.ClickException(str(exc)) from exc
    assistant = Assistant(_settings(model=model))
    report: dict = {"eval_file": ", ".join(str(p) for p in paths), "model": assistant.settings.model}
    if calibrate:
        scores, measure = ev.gate_scores(assistant, rows)
        report["gate"] = {
            **gate.calibrate(scores),
            "measure": measure,
            "calibrated_on": [p.name for p in paths],
            "cross_validated": gate.cross_validate(scores),
        }
        ev.write_calibration(report["gate"], measure)
        assistant = Assistant(_settings(model=model))
    report["retrieval"] = asdict(ev.evaluate_retrieval(assistant, rows))
    if not retrieval_only:
        report["answers"] = asdict(ev.evaluate_answers(assistant, rows))
    if as_json:
        _print_json(report)
        return
    _print_eval_table(report, len(rows))


def _print_eval_table(report: dict, questions: int) -> None:
    """The eval report as the Markdown table the README shows."""
    r = report["retrieval"]
    click.echo(f"Eval set: {report['eval_file']} ({questions} questions), model {report['model']}")
    click.echo("| metric | value |\n|---|---|")
    click.echo(f"| retrieval recall@1 | {r['recall_at_1']:.3f} |")
    click.echo(f"| retrieval recall@5 | {r['recall_at_5']:.3f} |")
    click.echo(f"| retrieval MRR | {r['mrr']:.3f} |")
    if "gate" in report:
        g, cv = report["gate"], report["gate"]["cross_validated"]
        click.echo(f"| gate threshold (saved) | {g['threshold']:.4f} |")
        click.echo(f"| gate in/out-of-scope accuracy, in-sample | "
                   f"{g['in_scope_accuracy']:.1%} / {g['out_of_scope_accuracy']:.1%} |")
        click.echo(f"| gate in/out-of-scope accuracy, {cv['folds']}-fold cross-validated | "
                   f"{cv['in_scope_accuracy']:.1%} / {cv['out_of_scope_accuracy']:.1%} |")
    if "answers" in report:
        _print_answer_rows(report["answers"])
    for miss in r["misses"]:
        click.echo(f"retrieval miss: {miss}", err=True)


def _print_answer_rows(a: dict) -> None:
    click.echo(f"| in-scope questions answered | {a['in_scope_answered']:.1%} |")
    click.echo(f"| out-of-scope questions declined | {a['out_of_scope_declined']:.1%} |")
    click.echo(f"| citation validity | {a['citation_validity']:.1%} |")
    click.echo(f"| model sentences kept after verification | {a['model_sentences_kept']:.1%} |")
    click.echo(f"| answer sentences in the model's own words | {a['model_written_share']:.1%} |")
    click.echo(f"| extractive fallback rate | {a['extractive_rate']:.1%} |")
    c = a["content"]
    if c["nugget_rows"]:
        click.echo(f"| nugget recall / complete answers ({c['nugget_rows']} rows with nuggets) | "
                   f"{c['nugget_recall']:.3f} / {c['complete_answers']:.1%} |")
    click.echo(f"| broken sentences (dangling lead-in or pronoun, about the guide) | "
               f"{c['broken_sentences']} |")
    click.echo(f"| off-topic sentences per answer | {c['off_topic_per_answer']:.2f} |")
    if c.get("follow_up_rows"):
        click.echo(f"| follow-ups ({c['follow_up_rows']} rows): nugget recall / sentences repeated "
                   f"from earlier answers | {c['follow_up_nugget_recall']:.3f} / {c['follow_up_repeats']} |")
    click.echo(f"| answer length, mean | {c['mean_answer_words']:.0f} words |")
    click.echo(f"| first token, median | {a['first_token_ms_p50']:.0f} ms |")
    click.echo(f"| answer time, median / p95 | {a['total_ms_p50']:.0f} / {a['total_ms_p95']:.0f} ms |")


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1, or FTCHAT_HOST).")
@click.option("--port", default=None, type=int, help="Port (default 7860, or FTCHAT_PORT).")
@click.option("--auth", default=None, metavar="USER:PASSWORD",
              help="Credentials required to use the page and its API (default: FTCHAT_AUTH).")
@click.option("--share", is_flag=True, help="Also open a public Gradio share link (off by default).")
def serve(host: str | None, port: int | None, auth: str | None, share: bool) -> None:
    """Start the chat page (same as `python app.py`).

    Binds 127.0.0.1 unless told otherwise; binding another address (or --share) without
    --auth prints a loud warning.
    """
    from ftchat.page.serve import launch

    credentials = None
    if auth is not None:
        try:
            credentials = parse_auth(auth)
        except SettingsError as exc:
            raise click.BadParameter(str(exc), param_hint="--auth") from exc
    launch(_settings(auth=credentials), host=host, port=port, share=share)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("--write", "write_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the JSON results to PATH.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also save the Markdown table to PATH (the README shows bench/results.md).")
@click.option("--quick", is_flag=True,
              help="One question, fewer repeats, no slow baselines (same keys, for tests).")
def bench(as_json: bool, write_path: Path | None, markdown_path: Path | None, quick: bool) -> None:
    """Measure speed and memory on this machine, next to a naive baseline (~5 min).

    Retrieval, first token, answer time, decoding and prefill speed (and the memory
    bandwidth bound), cold starts, peak memory and index builds. Progress goes to stderr.
    """
    from ftchat.tools import bench as benchmark

    result = benchmark.run(_settings(), quick=quick)
    if write_path is not None or markdown_path is not None:
        benchmark.write(result, write_path or markdown_path.with_suffix(".json"), markdown_path)
    if as_json:
        _print_json(result)
    else:
        click.echo(benchmark.markdown(result))


@main.command()
@click.option("--sessions", type=click.IntRange(1), default=8, show_default=True, help="Concurrent sessions.")
@click.option("--questions", type=click.IntRange(1), default=25, show_default=True,
              help="Questions per session.")
@click.option("--time-limit", type=float, default=3600, show_default=True,
              help="Seconds after which no new question is asked.")
@click.option("--max-growth-mb", type=float, default=150, show_default=True,
              help="Allowed RSS growth after the first quarter of the run.")
@click.option("--k", type=int, default=0, show_default=True,
              help="Passages per question (0: the page's default).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed for the question plans.")
@click.option("--eval-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Questions to ask (default eval/eval.jsonl).")
@click.option("--index-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Index folder for the page (default: FTCHAT_INDEX_DIR or ./index).")
@click.option("--url", help="Drive a page already running on a loopback address instead.")
@click.option("--pid", type=int, help="With --url: the server's process id, to sample its memory.")
@click.option("--log", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the page's log (default: a temp file).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON to this file.")
def loadtest(index_dir: Path | None, json_path: Path | None, **options: object) -> None:
    """Drive the page with concurrent sessions on a free loopback port (~15 min).

    Each session asks in-scope, out-of-scope and follow-up questions through the page's API
    with its own history; every answer is checked (well-formed, cited, never another
    session's), and latency and the server's memory are reported. Exit status 0 only when
    everything passed.
    """
    from ftchat.tools import loadtest as load

    settings = _settings(index_dir=index_dir)
    try:
        report = load.run(settings, load.Options(**{k: v for k, v in options.items() if v is not None}))
    except load.LoadTestError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(report, indent=2)
    if json_path is not None:
        json_path.write_text(text + "\n", encoding="utf-8")
    click.echo(text)
    click.echo("\n" + load.summary_line(report))
    if not report["passed"]:
        sys.exit(1)


@main.command()
@click.option("--train", "train_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Training rows (default train/targets.jsonl; format in docs/training.md).")
@click.option("--val", "val_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Validation rows (default train/targets.val.jsonl).")
@click.option("--output", "output_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Adapter folder to write (default: the guide preset's shipped adapter).")
@click.option("--rank", type=click.IntRange(1, 256), help="LoRA rank (default 16).")
@click.option("--alpha", type=click.IntRange(1, 1024), help="LoRA alpha (default 32).")
@click.option("--targets", "target_modules", help="Comma-separated layers to adapt (default: all linear).")
@click.option("--top-layers", type=click.IntRange(0),
              help="Adapt only the last N blocks (default 10; 0: all).")
@click.option("--lr", "learning_rate", type=click.FloatRange(0, min_open=True),
              help="Learning rate (default 1e-3).")
@click.option("--epochs", type=click.FloatRange(0, min_open=True), help="Epochs (default 2).")
@click.option("--max-steps", type=click.IntRange(1), help="Stop after N optimizer steps.")
@click.option("--batch-size", type=click.IntRange(1), help="Examples per forward pass (default 4).")
@click.option("--grad-accum", type=click.IntRange(1), help="Forward passes per optimizer step (default 2).")
@click.option("--max-tokens", type=click.IntRange(16), help="Leave out longer rows (default 768).")
@click.option("--save-steps", type=click.IntRange(1), help="Checkpoint every N steps (default 25).")
@click.option("--eval-steps", type=click.IntRange(1), help="Validation loss every N steps (default 50).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16"]),
              help="auto: bfloat16 autocast where the CPU runs it natively (default).")
def train(target_modules: str | None, **options: object) -> None:
    """Fine-tune the guide adapter (LoRA on SmolLM2-135M) on the training rows.

    Running the same command again resumes from its last checkpoint. Progress goes to the
    terminal and to progress.jsonl in the run's work folder; at the end the adapter folder
    (adapter, manifest.json, loss.png) is replaced in one step.
    """
    from ftchat.tools import training

    logging.getLogger("ftchat").setLevel(logging.INFO)
    modules = tuple(m.strip() for m in target_modules.split(",") if m.strip()) if target_modules else None
    config = training.TrainConfig().with_overrides(target_modules=modules, **options)
    try:
        result = training.train(config, _settings())
    except training.TrainingError as exc:
        raise click.ClickException(str(exc)) from exc
    m = result.manifest
    val = "none" if m["val_loss"] is None else f"{m['val_loss']:.4f}"
    click.echo(f"Adapter written to {result.adapter_dir}: {m['steps']} steps in {m['seconds']:.0f} s, "
               f"train loss {m['train_loss']}, validation loss {val} (work folder {result.work_dir})")


@main.command(name="train-ranker")
@click.option("--questions", "questions_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Training questions (default train/questions.jsonl).")
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Ranker file to write (default: the one shipped in the package).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Mined rows and mining indexes (default: the cache's ranker-training/).")
def train_ranker(**options: object) -> None:
    """Fit the learned ranker on the guide's questions (a few minutes on 2 cores).

    Its candidates come from ftchat's own hybrid retrieval; the validation split chooses
    its settings. Running the same command again reuses the folds already mined. Run
    `ftchat calibrate` afterwards: the gate reads the ranker's score.
    """
    from ftchat.tools import ranker_training as rt

    logging.getLogger("ftchat").setLevel(logging.INFO)
    config = rt.RankerConfig().with_overrides(**options)
    try:
        m = rt.train_ranker(_settings(), config)
    except rt.RankerDataError as exc:
        raise click.ClickException(str(exc)) from exc
    v = m["validation"]
    click.echo(f"Ranker written to {config.output_file} in {m['seconds']:.0f} s: validation recall@1 "
               f"{v['recall_at_1']:.3f} reordering the top {m['depth']} (hybrid alone "
               f"{v['hybrid_recall_at_1']:.3f}, {v['questions']} questions)")


@main.command(name="train-scorer")
@click.option("--questions", "questions_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Training questions with nuggets (default train/questions.jsonl).")
@click.option("--output", "output_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Scorer file to write (default: the one shipped in the package).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Mining indexes (default: the cache's ranker-training/, shared with train-ranker).")
@click.option("--ablation", is_flag=True, default=None,
              help="Also measure each hand rule and each group of signals removed; prints the table.")
def train_scorer(**options: object) -> None:
    """Fit the learned unit scorer on the guide's questions and their nuggets (a few minutes).

    Its units come from ftchat's own retrieval; the validation split chooses its strength
    and how evidence is chosen with it (docs/evaluation.md).
    """
    from ftchat.api import Assistant
    from ftchat.tools import evidence_training as et
    from ftchat.tools import ranker_training as rt

    logging.getLogger("ftchat").setLevel(logging.INFO)
    config = et.ScorerConfig().with_overrides(**options)
    settings = _settings()
    try:
        m = et.train_scorer(settings, config, Assistant(settings).evidence_policy)
    except rt.RankerDataError as exc:
        raise click.ClickException(str(exc)) from exc
    v = m["validation"]
    click.echo(f"Scorer written to {config.output_file} in {m['seconds']:.0f} s. Validation "
               f"({v['questions']} questions): nugget recall {v['learned']['nugget_recall']:.3f}, "
               f"complete {v['learned']['complete']:.1%}, {v['learned']['words']:.0f} words; hand rules "
               f"{v['hand_rules']['nugget_recall']:.3f}, {v['hand_rules']['complete']:.1%}, "
               f"{v['hand_rules']['words']:.0f} words")
    if "ablation" in v:
        click.echo(et.ablation_markdown(v["ablation"]))


@main.command()
@click.option("--questions", "questions_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Questions to fit on (default train/questions.jsonl).")
@click.option("--save", is_flag=True, help="Write the fit to the package's gate.json (it then decides).")
def calibrate(questions_file: Path | None, save: bool) -> None:
    """Fit the not-covered gate's thresholds on train/, never on an eval set.

    The cosine threshold is fitted on every training question, the learned ranker's (with
    FTCHAT_RANKER=on) on the rows it never trained on. Each answers at least 98% of
    in-scope questions and declines as many others as it can then. Printed; with --save,
    also written to the package's gate.json.
    """
    from ftchat.config import GATE_FILE
    from ftchat.tools import ranker_training as rt
    from ftchat.tools.evaluation import write_calibration

    config = rt.RankerConfig().with_overrides(questions_file=questions_file)
    try:
        result = rt.fit_gate(_settings(), config)
    except rt.RankerDataError as exc:
        raise click.ClickException(str(exc)) from exc
    if save:
        write_calibration(result)
    for name, fit in (("cosine", result), ("learned", result.get("learned"))):
        if fit:
            cv = fit["cross_validated"]
            click.echo(f"{name}: threshold {fit['threshold']} on {fit['in_scope_questions']} in-scope and "
                       f"{fit['out_of_scope_questions']} out-of-scope questions; cross-validated "
                       f"{cv['in_scope_accuracy']:.1%} answered, {cv['out_of_scope_accuracy']:.1%} declined")
    where = f"saved to {GATE_FILE}" if save else "not saved: --save writes it"
    click.echo(f"The fit reads the {result['measure']} score ({where}).")


@main.command(name="eval-quiz")
@click.argument("answers_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--split", default=None, help='Only rows whose "split" is this (e.g. validation).')
@click.option("--choose", is_flag=True, help="Choose the grader's thresholds on these answers (printed).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def eval_quiz(answers_file: Path | None, split: str | None, choose: bool, as_json: bool) -> None:
    """How often the quiz grader's label agrees with a reviewer's (default: eval/quiz/reviewer.jsonl).

    With --choose, pick the thresholds (best agreement, at most 1.5% of answers that are
    wrong called correct) on your own labelled answers, e.g. train/quiz_answers.jsonl; the
    shipped ones are in ftchat.study.grading.GradingPolicy."""
    from dataclasses import asdict

    from ftchat.api import Assistant
    from ftchat.tools import quiz_agreement as qa

    try:
        rows = qa.load_answers(answers_file or qa.REVIEWER_FILE)
        rows = [r for r in rows if split is None or r.split == split]
        if not rows:
            raise qa.AnswersError(f"no labelled answers{f' with split {split!r}' if split else ''} to grade")
        tutor = Assistant(_settings()).tutor()
        if choose:
            policy, result = qa.choose_policy(tutor, rows)
            result["policy"] = {k: getattr(policy, k) for k in qa.GRID}
        else:
            result = qa.agreement(tutor, rows)
            result["policy"] = asdict(tutor.policy)
    except qa.AnswersError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _print_json(result)
        return
    c, share = result["confusion"], result["wrong_called_correct"]
    click.echo(f"{result['answers']} answers: the grader agrees with the reviewer on "
               f"{result['agreement']:.1%}; wrong answers called correct: {share:.1%} of all answers")
    click.echo("reviewer \\ grader   correct  partial  wrong")
    for label in qa.LABELS:
        click.echo(f"{label:<18} {c[label]['correct']:>7}  {c[label]['partial']:>7}  {c[label]['wrong']:>5}")
    if choose:
        click.echo("chosen: " + ", ".join(f"{k}={v}" for k, v in result["policy"].items()))


main.add_command(quiz)

if __name__ == "__main__":
    sys.exit(main())
