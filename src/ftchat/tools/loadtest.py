"""`ftchat loadtest`: start the page on a free loopback port and drive it with concurrent sessions.

    ftchat loadtest                                  # 8 sessions x 25 questions (`make loadtest`)
    ftchat loadtest --sessions 4 --questions 6 --json report.json
    ftchat loadtest --url http://127.0.0.1:7860/     # a page already running

Each session is its own gradio_client Client (its own Gradio session) and asks a mix of
in-scope, out-of-scope and follow-up questions from eval/eval.jsonl through the page's
`/ask` API, passing its own conversation history. Checked for every answer:

  * no failed request (exception, error payload, missing final {"done": true} message);
  * well-formed: question echoed, answer text, mode, and every [n] in the answer present
    in the citations; in-scope answers carry at least one citation;
  * no mixing between sessions: the server's `search_query` equals what this session's
    own history gives (answering.conversation.condense), and the follow-up's passages hit
    the topic of this session's earlier turn.

Reported: latency p50/p95 (wall time per request, queueing included, and the server's own
answer time), peak RSS of the server process, RSS before/after, and the growth across
the run (bounded by max_growth_mb). Load goes to 127.0.0.1 only; the run stops asking
new questions after time_limit seconds. `passed` only when everything passed.
"""

from __future__ import annotations

import random
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftchat.answering.conversation import condense
from ftchat.answering.verify import cited_numbers  # the same rules the server applies
from ftchat.config import REPO_ROOT, Settings
from ftchat.files import read_lines
from ftchat.page.serve import PageProcess
from ftchat.tools.stats import percentile

EVAL_FILE = REPO_ROOT / "eval" / "eval.jsonl"
START_TIMEOUT_S = 300


class LoadTestError(ValueError):
    """A load test that cannot start: an unusable questions file or a non-loopback URL."""


@dataclass(frozen=True)
class Options:
    """What `ftchat loadtest` is asked to do (its options, with the same defaults)."""

    sessions: int = 8  # concurrent sessions
    questions: int = 25  # questions per session
    time_limit: float = 3600  # seconds after which no new question is asked
    max_growth_mb: float = 150  # allowed RSS growth after the first quarter of the run
    k: int = 0  # passages per question (0: the page's default)
    seed: int = 1  # seed for the question plans
    eval_file: Path = EVAL_FILE
    url: str | None = None  # drive a page already running on a loopback address instead
    pid: int | None = None  # with url: the server's process id, to sample its memory
    log: Path | None = None  # where to write the page's log (default: a temp file)


# --- Question plans -----------------------------------------------------------------------


@dataclass
class Step:
    question: str
    kind: str  # "in-scope", "out-of-scope", "history" (the turn a follow-up refers to), "follow-up"
    expected_terms: tuple[str, ...] = ()


def load_rows(path: Path = EVAL_FILE) -> list[dict]:
    lines = list(read_lines(path))
    if bad := next((line for line in lines if line.error), None):
        raise LoadTestError(f"{path}:{bad.number}: {bad.error}")
    return [line.value for line in lines]


def plan(rows: list[dict], count: int, seed: int) -> list[Step]:
    """`count` questions: in-scope, out-of-scope and follow-up blocks (earlier turn + follow-up)."""
    rng = random.Random(seed)
    in_scope = [r for r in rows if r["answerable"] and not r.get("history")]
    out_scope = [r for r in rows if not r["answerable"]]
    follow = [r for r in rows if r.get("history")]
    steps: list[Step] = []
    kinds = ["in-scope", "out-of-scope", "follow-up", "in-scope", "follow-up"]
    position = rng.randrange(len(kinds))
    while len(steps) < count:
        kind = kinds[position % len(kinds)]
        position += 1
        if kind == "in-scope":
            r = rng.choice(in_scope)
            steps.append(Step(r["question"], kind, tuple(r["expected_terms"])))
        elif kind == "out-of-scope":
            steps.append(Step(rng.choice(out_scope)["question"], kind))
        elif count - len(steps) >= 2:
            r = rng.choice(follow)
            steps.append(Step(r["history"][-1], "history"))
            steps.append(Step(r["question"], "follow-up", tuple(r["expected_terms"])))
    return steps[:count]


# --- The server ---------------------------------------------------------------------------


def start_server(settings: Settings, log_path: Path) -> PageProcess:
    """`ftchat serve` on a free loopback port, open (no FTCHAT_AUTH), reading `settings`,
    its log in a file."""
    return PageProcess(log_path, env=settings.child_environment())


def rss_bytes(pid: int) -> int:
    """Resident memory of the process (and any children it started), from /proc."""
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, int]] = []  # (time, rss, answers completed)
        self.completed = 0
        self._halt = threading.Event()

    def run(self) -> None:
        started = time.perf_counter()
        while not self._halt.is_set():
            try:
                self.samples.append((time.perf_counter() - started, rss_bytes(self.pid), self.completed))
            except Exception:
                return
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# --- Sessions -----------------------------------------------------------------------------


@dataclass
class Result:
    session: int
    turn: int
    kind: str
    question: str
    seconds: float
    server_ms: float | None = None
    answerable: bool | None = None
    mode: str | None = None
    problems: list[str] = field(default_factory=list)
    follow_up_hit: bool | None = None


def check_answer(step: Step, history: list[str], outputs: list[dict]) -> tuple[list[str], bool | None]:
    """Problems with one /ask result (empty when it is fine), and whether a follow-up hit its topic."""
    if not outputs:
        return ["no output"], None
    final = outputs[-1]
    if not isinstance(final, dict) or final.get("done") is not True:
        return [f"stream did not end with done=true: {str(final)[:200]}"], None
    if final.get("error"):
        return [f"error: {final['error'][:300]}"], None
    problems = []
    expected_question = " ".join(step.question.split())
    if final.get("question") != expected_question:
        problems.append(f"answer is for another question: {final.get('question')!r}")
    if final.get("search_query") != condense(expected_question, history):
        problems.append(f"search query {final.get('search_query')!r} does not come from this "
                        "session's own history")
    text = final.get("answer")
    if not isinstance(text, str) or not text.strip():
        problems.append("empty answer")
        text = ""
    if final.get("mode") not in ("generated", "extractive", "declined"):
        problems.append(f"unknown mode {final.get('mode')!r}")
    citations = final.get("citations")
    if not isinstance(citations, list):
        problems.append("citations missing")
        citations = []
    numbers = {c.get("n") for c in citations}
    cited = set(cited_numbers(text))
    if not cited <= numbers:
        problems.append(f"answer cites {sorted(cited - numbers)} which are not in its citations")
    if final.get("answerable"):
        if not cited or not citations:
            problems.append("an answered question without citations")
        for c in citations:
            fields = ("chunk_id", "title", "source", "text")
            if not all(isinstance(c.get(key), str) and c[key] for key in fields):
                problems.append(f"malformed citation {str(c)[:200]}")
    elif final.get("mode") != "declined" or citations:
        problems.append("a declined answer with citations or another mode")
    if not isinstance(final.get("passages"), list):
        problems.append("passages missing")
    hit = None
    if step.kind == "follow-up":
        terms = [t.lower() for t in step.expected_terms]
        hit = any(t in (p.get("title", "") + " " + p.get("text", "")).lower()
                  for p in final.get("passages") or [] for t in terms)
    return problems, hit


def run_session(url: str, number: int, steps: list[Step], deadline: float, results: list[Result],
                lock: threading.Lock, sampler: MemorySampler | None, k: int) -> None:
    from gradio_client import Client

    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as exc:
        with lock:
            results.append(Result(number, 0, "connect", "", 0.0, problems=[f"connect failed: {exc}"]))
        return
    history: list[str] = []
    for turn, step in enumerate(steps, start=1):
        if time.monotonic() > deadline:
            break
        started = time.perf_counter()
        try:
            job = client.submit(step.question, history, k, api_name="/ask")
            outputs = list(job)
            problems, hit = check_answer(step, history, outputs)
        except Exception as exc:  # a failed request
            outputs, problems, hit = [], [f"{type(exc).__name__}: {exc}"[:300]], None
        seconds = time.perf_counter() - started
        final = outputs[-1] if outputs and isinstance(outputs[-1], dict) else {}
        result = Result(number, turn, step.kind, step.question, seconds,
                        (final.get("timings") or {}).get("total_ms"), final.get("answerable"),
                        final.get("mode"), problems, hit)
        with lock:
            results.append(result)
            if sampler:
                sampler.completed += 1
            if len(results) % 25 == 0:
                failed = sum(1 for r in results if r.problems)
                print(f"  {len(results)} answers, {failed} failures", flush=True)
        history.append(step.question)
    try:
        client.close()
    except Exception:
        pass


def run(settings: Settings, options: Options) -> dict:
    """The load test's report; the page it starts (unless options.url) reads `settings`."""
    rows = load_rows(options.eval_file)
    url, server = _target(settings, options)
    pid = server.process.pid if server else options.pid
    report: dict = {"url": url, "sessions": options.sessions, "questions_per_session": options.questions}
    sampler = None
    results: list[Result] = []
    try:
        report["warm_up_seconds"] = _warm_up(url)
        if pid:
            sampler = MemorySampler(pid)
            sampler.start()
            time.sleep(0.6)
        elapsed = _drive(url, rows, options, results, sampler)
    finally:
        if sampler:
            sampler.stop()
        if server:
            if server.process.poll() is not None:
                report["server_exit"] = server.process.returncode
            server.stop()
    report.update(_summary(results, elapsed, options))
    ok = report["failures"] == 0 and len(results) > 0
    if sampler and sampler.samples:
        report["memory_mb"], growth = _memory(sampler, len(results), options.max_growth_mb)
        report["memory_flat"] = growth <= options.max_growth_mb
        ok = ok and report["memory_flat"]
    if report.get("server_exit") is not None:
        ok = False
    report["passed"] = ok
    return report


def _target(settings: Settings, options: Options) -> tuple[str, PageProcess | None]:
    """The URL to drive: --url, or a page started here (returned so it can be stopped)."""
    if options.url:
        if not re.match(r"https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", options.url):
            raise LoadTestError("--url must point at a loopback address (127.0.0.1, localhost, [::1])")
        return options.url, None
    log_path = Path(options.log or tempfile.mkstemp(prefix="ftchat-loadtest-", suffix=".log")[1])
    server = start_server(settings, log_path)
    print(f"starting the page on {server.url} (log: {log_path})", flush=True)
    try:
        start_seconds = server.wait_ready(START_TIMEOUT_S)
    except RuntimeError:
        server.stop()
        raise
    print(f"app ready after {start_seconds:.1f} s", flush=True)
    return server.url, server


def _warm_up(url: str) -> float:
    """One question, not counted: waits for the model to finish loading."""
    from gradio_client import Client

    started = time.perf_counter()
    warm = Client(url, verbose=False, download_files=False)
    list(warm.submit("What is LoRA?", [], 0, api_name="/ask"))
    warm.close()
    return round(time.perf_counter() - started, 1)


def _drive(url: str, rows: list[dict], options: Options, results: list[Result],
           sampler: MemorySampler | None) -> float:
    """All sessions at once, each in its own thread; the seconds they took."""
    plans = [plan(rows, options.questions, options.seed + s) for s in range(options.sessions)]
    lock = threading.Lock()
    deadline = time.monotonic() + options.time_limit
    started = time.perf_counter()
    threads = [
        threading.Thread(target=run_session, name=f"session-{s}",
                         args=(url, s, plans[s], deadline, results, lock, sampler, options.k))
        for s in range(options.sessions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=options.time_limit + 600)
    return time.perf_counter() - started


def _summary(results: list[Result], elapsed: float, options: Options) -> dict:
    failures = [r for r in results if r.problems]
    seconds = [r.seconds for r in results if not r.problems]
    server_ms = [r.server_ms for r in results if r.server_ms is not None and not r.problems]
    follow_ups = [r for r in results if r.kind == "follow-up" and not r.problems]
    planned = options.sessions * options.questions
    return dict(
        planned=planned,
        completed=len(results),
        stopped_by_time_limit=len(results) < planned,
        failures=len(failures),
        failure_examples=[f"session {r.session} turn {r.turn} ({r.kind}) {r.question!r}: {r.problems}"
                          for r in failures[:10]],
        by_kind={kind: sum(1 for r in results if r.kind == kind)
                 for kind in ("in-scope", "out-of-scope", "history", "follow-up")},
        answered=sum(1 for r in results if r.answerable),
        declined=sum(1 for r in results if r.answerable is False),
        follow_up_topic_hits=f"{sum(1 for r in follow_ups if r.follow_up_hit)}/{len(follow_ups)}",
        elapsed_seconds=round(elapsed, 1),
        throughput_per_minute=round(len(results) / elapsed * 60, 1) if elapsed else None,
        latency_seconds={"p50": round(percentile(seconds, 50), 2) if seconds else None,
                         "p95": round(percentile(seconds, 95), 2) if seconds else None,
                         "max": round(max(seconds), 2) if seconds else None},
        server_answer_ms={"p50": round(percentile(server_ms, 50)) if server_ms else None,
                          "p95": round(percentile(server_ms, 95)) if server_ms else None},
    )


def _memory(sampler: MemorySampler, answers: int, bound_mb: float) -> tuple[dict, float]:
    """The RSS report, and the growth (MB) after the first quarter of the answers."""
    mb = [s[1] / 2**20 for s in sampler.samples]
    before = mb[0]
    # Growth is judged after the first quarter of the answers: allocator pools and
    # caches fill up early under concurrency; a leak keeps growing after that.
    quarter = max(1, answers // 4)
    settled = [m for (_, _, done), m in zip(sampler.samples, mb, strict=True) if done >= quarter]
    settled_start = settled[0] if settled else before
    growth = mb[-1] - settled_start
    return {
        "before": round(before), "after": round(mb[-1]), "peak": round(max(mb)),
        "after_first_quarter": round(settled_start), "growth_after_first_quarter": round(growth, 1),
        "bound": bound_mb, "samples": len(mb),
        # RSS when each tenth of the answers had come back: a leak climbs steadily here.
        "by_tenth": [round(next((m for (_, _, done), m in zip(sampler.samples, mb, strict=True)
                                 if done >= answers * t / 10), mb[-1])) for t in range(1, 11)],
    }, growth


def summary_line(report: dict) -> str:
    """The run in one line, PASSED or FAILED at its end."""
    m = report.get("memory_mb", {})
    lat = report["latency_seconds"]
    return (
        f"{report['sessions']} sessions x {report['questions_per_session']} questions: "
        f"{report['completed']}/{report['planned']} done, {report['failures']} failures; "
        f"latency p50 {lat['p50']} s, p95 {lat['p95']} s (server answer p50 "
        f"{report['server_answer_ms']['p50']} ms); RSS {m.get('before')} -> {m.get('after')} MB "
        f"(peak {m.get('peak')} MB); {'PASSED' if report['passed'] else 'FAILED'}"
    )
