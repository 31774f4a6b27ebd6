"""`ftchat bench`: how fast ftchat is on this machine, next to a naive baseline run alongside.

Every figure is a median (and p95 where it is a distribution) over repeated runs after a
warm-up. Each optimised figure sits next to the same figure for the naive path measured in
the same run (float32 weights, dense retrieval only, no weight cache, a fresh model load),
because ratios travel across machines and absolute times do not. Progress goes to stderr.

The physical limit for decoding is memory bandwidth: every weight is read once per token,
so tokens/s can never beat (read bandwidth) / (weight bytes). The bandwidth is measured here
with numpy, and decoding is reported as a fraction of that bound.
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from ftchat.config import Settings
from ftchat.models.cpu import resolve_dtype
from ftchat.tools.stats import percentile

# Typical in-scope questions (one per topic), and a few more for retrieval timing.
ANSWER_QUESTIONS = [
    "What is LoRA?",
    "how do I balance a dataset with a rare class?",
    "What does gradient accumulation do?",
    "How does QLoRA save memory?",
    "What is catastrophic forgetting?",
]
RETRIEVAL_QUESTIONS = ANSWER_QUESTIONS + [
    "What is GPTQ?",
    "How should I pick a learning rate schedule?",
    "what is knowledge distillation",
    "Explain elastic weight consolidation",
    "What is the capital of France?",
    "how big should the validation set be",
    "What is DPO and how does it differ from RLHF?",
]
DECODE_TOKENS = 48


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _p50(values: list[float]) -> float:
    return percentile(values, 50)


def _p95(values: list[float]) -> float:
    return percentile(values, 95)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# --- The machine --------------------------------------------------------------------------


def machine(settings: Settings) -> dict:
    import torch

    from ftchat.models.cpu import (
        apply_threads,
        bf16_native,
        cpu_flags,
        cpu_model,
        int4_kernels,
        int8_supported,
        isa,
        onednn_isa_limit,
    )

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ),
        "torch_threads": apply_threads(settings.threads),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "avx512": "avx512f" in flags,
        # What torch's kernels and oneDNN may use: lower than the CPU's flags when emulating an
        # AVX2-only CPU (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2).
        "isa": isa(),
        "onednn_isa_limit": onednn_isa_limit() or None,
        "bf16": bf16_native(),
        "int4_kernels": int4_kernels(),
        "amx": bool(flags & {"amx_bf16", "amx_tile"}),
        "int8_kernels": int8_supported(),
        "dtype": resolve_dtype(settings.dtype),
        "dtype_setting": settings.dtype,
        "decoder_setting": settings.decoder,
        "threads_setting": settings.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def memory_bandwidth_gbs(threads: int, megabytes: int = 256, repeats: int = 5) -> float:
    """Read bandwidth: numpy sums of a large array, split over the same threads torch uses."""
    import numpy as np

    data = np.ones(megabytes * (1 << 20) // 4, dtype=np.float32)
    parts = np.array_split(data, max(threads, 1))
    times = []
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        list(pool.map(np.sum, parts))  # warm-up: pages touched, threads started
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(np.sum, parts))  # numpy releases the GIL inside large reductions
            times.append(time.perf_counter() - started)
    return data.nbytes / min(times) / 1e9  # the best run is the least disturbed one


# --- Retrieval ----------------------------------------------------------------------------


def bench_retrieval(assistant, repeats: int) -> dict:
    retriever = assistant.retriever
    embedder = retriever.embedder
    index = retriever.index
    for q in RETRIEVAL_QUESTIONS[:3]:  # warm-up
        retriever.search(q)
    hybrid, dense = [], []
    for _ in range(repeats):
        for q in RETRIEVAL_QUESTIONS:
            started = time.perf_counter()
            retriever.search(q)
            hybrid.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            index.vectors.search(embedder.encode([q]), assistant.settings.top_k)
            dense.append((time.perf_counter() - started) * 1000)
    return {
        "retrieval_ms_p50": _p50(hybrid),
        "retrieval_ms_p95": _p95(hybrid),
        "baseline_dense_retrieval_ms_p50": _p50(dense),
        "baseline_dense_retrieval_ms_p95": _p95(dense),
    }


# --- Answers and decoding -----------------------------------------------------------------


def bench_answers(assistant, questions: list[str], repeats: int) -> dict:
    assistant.ask(questions[0])  # warm-up (model loaded before)
    first, total, modes, tokens = [], [], [], []
    for _ in range(repeats):
        for q in questions:
            answer = assistant.ask(q)
            first.append(answer.timings["first_token_ms"])
            total.append(answer.timings["total_ms"])
            modes.append(answer.mode)
            tokens.append(answer.tokens)
    return {
        "first_token_ms_p50": _p50(first),
        "first_token_ms_p95": _p95(first),
        "answer_ms_p50": _p50(total),
        "answer_ms_p95": _p95(total),
        "answer_tokens_p50": _p50(tokens),
        "answer_modes": {m: modes.count(m) for m in sorted(set(modes))},
    }


def bench_decode(assistant, generator, repeats: int) -> dict:
    """Prefill and decode speed of the generator on a real answer prompt, greedy, fixed length.

    Prefill is timed to the first token (the whole prompt read, one token chosen); decoding
    is every token after it."""
    from ftchat.answering.evidence import select_evidence
    from ftchat.answering.prompt import build_messages

    question = ANSWER_QUESTIONS[0]
    passages = assistant.retriever.search(question)
    evidence = select_evidence(question, passages, assistant.retriever.embedder,
                               term_weight=assistant.index.keyword.idf)
    prompt = generator.prompt_tokens(build_messages(question, evidence))
    prefill, decode = [], []
    for _ in range(repeats + 1):  # the first run is a warm-up
        if forget := getattr(generator.decoder, "forget_prompt", None):
            forget()  # else the same prompt again is read from its kept keys and values
        started = time.perf_counter()
        first_s = None
        produced = 0
        for _token in generator.tokens(prompt, DECODE_TOKENS, to_the_limit=True):
            produced += 1
            if first_s is None:
                first_s = time.perf_counter() - started
        total_s = time.perf_counter() - started
        prefill.append(len(prompt) / first_s)
        decode.append((produced - 1) / max(total_s - first_s, 1e-6))
    return {
        "prompt_tokens": len(prompt),
        "prefill_tokens_per_s": _p50(prefill[1:]),
        "decode_tokens_per_s": _p50(decode[1:]),
        "weight_bytes": generator.weight_bytes(),
        "decoder": generator.backend,
    }


def agreement_questions(settings: Settings, count: int) -> list[str]:
    """`count` in-scope questions from the training questions, spread over the guide (the
    eval sets judge answers; this only compares two decoders on the same prompts)."""
    from ftchat.documents.questions import load_sample_questions

    questions, _ = load_sample_questions(settings.questions_file)
    step = max(len(questions) // max(count, 1), 1)
    return [q.question for q in questions[::step][:count]]


def bench_agreement(assistant, generator, reference, questions: list[str]) -> dict:
    """Teacher-forced next-token agreement of `generator` with `reference` (float32) on answer
    prompts: the reference writes each answer (greedy, up to DECODE_TOKENS), then both read
    prompt and answer at once and pick their most likely token at every answer position.
    Counting there, not on two free runs, keeps one early difference from counting twice."""
    from ftchat.answering.prompt import build_messages

    if not all(hasattr(d, "choices") for d in (generator.decoder, reference.decoder)):
        return {"agreement_prompts": 0, "agreement_with_float32": None}
    same = total = 0
    for question in questions:
        prompt = reference.prompt_tokens(build_messages(question, assistant.evidence(question)))
        written = list(reference.tokens(prompt, DECODE_TOKENS))
        if not written:
            continue
        sequence = prompt + written
        picks = [generator.decoder.choices(sequence), reference.decoder.choices(sequence)]
        answer_positions = range(len(prompt) - 1, len(sequence) - 1)
        same += sum(picks[0][i] == picks[1][i] for i in answer_positions)
        total += len(answer_positions)
    return {"agreement_prompts": len(questions), "agreement_tokens": total,
            "agreement_with_float32": same / total if total else None}


# --- Cold starts and memory -----------------------------------------------------------------


def _env(settings: Settings, **extra: str) -> dict:
    # The child gets these settings, not whatever FTCHAT_* the parent's environment held.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTCHAT_")}
    env.update(
        FTCHAT_CORPUS_DIR=str(settings.corpus_dir),
        FTCHAT_INDEX_DIR=str(settings.index_dir),
        FTCHAT_CACHE_DIR=str(settings.cache_dir),
        FTCHAT_MODEL=settings.model,
        FTCHAT_DTYPE=settings.dtype,
        FTCHAT_THREADS=str(settings.threads),
        FTCHAT_DECODER=settings.decoder,
        FTCHAT_EMBEDDER=settings.embedder,
        FTCHAT_DENSE_WEIGHT=str(settings.dense_weight),
        FTCHAT_MAX_TOKENS=str(settings.max_new_tokens),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    env.update(extra)
    return env


def _ftchat() -> list[str]:
    script = Path(sys.executable).with_name("ftchat")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ftchat.cli"]


def cold_start_answer(settings: Settings, question: str, **env: str) -> dict:
    """A fresh `ftchat ask --json` process until its answer is printed (the user has it
    then; the interpreter's own teardown of torch takes most of another second, measured
    as `exit_seconds`); its peak resident memory from wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*_ftchat(), "ask", question, "--json"], env=_env(settings, **env),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    output = proc.stdout.readline() if proc.stdout else b""
    seconds = time.perf_counter() - started
    peak_mb = _peak_rss_mb(proc.pid)  # up to its answer, read while it is still there
    output += proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    exit_seconds = time.perf_counter() - started
    if peak_mb is None:  # ru_maxrss is in KiB on Linux, bytes on macOS
        peak_mb = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    try:
        answer = json.loads(output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    return {
        "seconds": seconds, "exit_seconds": exit_seconds, "peak_rss_mb": peak_mb, "ok": proc.returncode == 0,
        "answerable": answer.get("answerable"), "citations": len(answer.get("citations", [])),
    }


def _peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory since it started its program (VmHWM), where Linux
    reports it. Not wait4's ru_maxrss: that counts the memory the child shared with this
    process until exec, so late in a bench run, with models loaded here, a child that
    peaked at 640 MB was reported at 1,583 MB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cold_start_page(settings: Settings, timeout: float = 180.0) -> float | None:
    """A fresh `ftchat serve` process until the page says it is ready."""
    from ftchat.page.serve import PageProcess

    with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as folder:
        page = PageProcess(Path(folder) / "page.log", env=_env(settings), command=[*_ftchat(), "serve"])
        try:
            return page.wait_ready(timeout)
        except RuntimeError:
            return None
        finally:
            page.stop()


# --- First visible text, as the page delivers it ----------------------------------------------


class PageSession:
    """One browser tab's worth of the page's own protocol: the same Gradio queue events the
    page's JavaScript joins (`/gradio_api/queue/join`) and the same event stream it reads
    (`/gradio_api/queue/data`), so a figure taken here is what a reader's page receives."""

    def __init__(self, client, url: str) -> None:
        import uuid

        self.client, self.url = client, url.rstrip("/")
        self.session = uuid.uuid4().hex
        config = client.get(f"{self.url}/config").raise_for_status().json()
        self.components = {c["id"]: c for c in config["components"]}
        question = next(c["id"] for c in config["components"]
                        if c.get("props", {}).get("elem_id") == "ft-question")
        events = config["dependencies"]
        self.submit = next(d for d in events if [question, "submit"] in map(list, d["targets"]))
        self.respond = next(d for d in events if d.get("trigger_after") == self.submit["id"])

    def event(self, dependency: dict, data: list) -> Iterator[dict]:
        """Join one event and yield its messages from the event stream until it completes."""
        joined = self.client.post(f"{self.url}/gradio_api/queue/join", json={
            "data": data, "event_data": None, "fn_index": dependency["id"], "trigger_id": None,
            "session_hash": self.session}).raise_for_status().json()
        with self.client.stream("GET", f"{self.url}/gradio_api/queue/data",
                                params={"session_hash": self.session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") != joined["event_id"]:
                    continue
                yield message
                if message.get("msg") == "process_completed":
                    if not message.get("success", True):
                        raise RuntimeError(f"the page's event failed: {message.get('output')}")
                    return

    def ask(self, question: str) -> float | None:
        """Ask as the Ask button does (submit, then the answer streamed into the chat); the
        milliseconds from the click until the first update whose answer shows text."""
        from gradio_client.utils import apply_diff

        from ftchat.page.render import shown_answer_text

        started = time.perf_counter()
        for _ in self.event(self.submit, [question, None]):
            pass
        # The inputs as a fresh tab sends them: the controls' initial values (State: None).
        values = [self.components[i].get("props", {}).get("value") for i in self.respond["inputs"]]
        first, chat = None, None
        for message in self.event(self.respond, values):
            if message.get("msg") not in ("process_generating", "process_completed"):
                continue
            data = message["output"]["data"][0]
            if message["msg"] == "process_generating" and chat is not None:
                chat = apply_diff(chat, data)  # after the first, streamed updates are diffs
            else:
                chat = data
            if first is None and chat and shown_answer_text(_message_text(chat[-1])):
                first = (time.perf_counter() - started) * 1000
        return first


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def bench_first_visible_text(settings: Settings, questions: list[str], repeats: int,
                             timeout: float = 180.0) -> dict:
    """A fresh `ftchat serve`; each question asked in a new tab's session, after one warm-up
    question (the model loaded). First visible text: from the click on Ask until the page
    receives the first update of the conversation that shows answer text (not a status)."""
    import httpx

    from ftchat.page.serve import PageProcess

    with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as folder:
        page = PageProcess(Path(folder) / "page.log", env=_env(settings), command=[*_ftchat(), "serve"])
        try:
            page.wait_ready(timeout)
            with httpx.Client(timeout=timeout) as client:
                PageSession(client, page.url).ask(questions[0])  # warm-up: model loaded
                times = [PageSession(client, page.url).ask(q) for _ in range(repeats) for q in questions]
        finally:
            page.stop()
    shown = [t for t in times if t is not None]
    return {
        "first_visible_text_ms_p50": _p50(shown) if shown else None,
        "first_visible_text_ms_p95": _p95(shown) if shown else None,
        "first_visible_text_runs": len(times),
        "first_visible_text_missing": len(times) - len(shown),
    }


# --- Index builds ---------------------------------------------------------------------------


def bench_guide_index(settings: Settings, repeats: int) -> tuple[float, int]:
    """A first build of the guide's index: seconds (median), and how many texts it had to
    embed (the package ships the vectors of the bundled guide's own, index.shipped_vectors)."""
    from ftchat.index.store import open_index

    times, embedded = [], 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as tmp:
            started = time.perf_counter()
            index = open_index(replace(settings, index_dir=Path(tmp) / "index"), rebuild=True)
            times.append(time.perf_counter() - started)
            embedded = index.manifest["embedded"]
    return _p50(times), embedded


def _generated_corpus(folder: Path, pages: int, source_texts: list[str]) -> None:
    """`pages` sections of ~150 words each, spread over files of 100 pages."""
    rng = random.Random(5)
    sentences = [s for t in source_texts for s in t.replace("\n", " ").split(". ") if len(s.split()) > 4]
    folder.mkdir(parents=True)
    for start in range(0, pages, 100):
        lines = [f"# Generated part {start // 100 + 1}\n"]
        for page in range(start, min(start + 100, pages)):
            body = []
            while sum(len(s.split()) for s in body) < 140:
                body.append(rng.choice(sentences).strip().rstrip(".") + ".")
            lines.append(f"## Page {page + 1}\n\n{' '.join(body)}\n")
        (folder / f"part-{start // 100 + 1:03d}.md").write_text("\n".join(lines), encoding="utf-8")


def bench_large_corpus(settings: Settings, embedder, pages: int, source_texts: list[str]) -> dict:
    from ftchat.documents.chunking import chunk_sections
    from ftchat.documents.corpus import load_sources
    from ftchat.index.store import open_index

    with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        _generated_corpus(corpus, pages, source_texts)
        big = replace(settings, corpus_dir=corpus, index_dir=Path(tmp) / "index")
        chunks = chunk_sections(load_sources([corpus]).sections, settings.chunk_max_words)
        texts = [c.embedding_text() for c in chunks]
        started = time.perf_counter()
        embedder.encode(texts)
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        built = open_index(big, rebuild=True)
        build_s = time.perf_counter() - started
    n = len(built)
    return {
        "large_corpus_pages": pages,
        "large_corpus_chunks": n,
        "large_index_build_s": build_s,
        "large_index_chunks_per_s": n / build_s,
        "embedder_raw_chunks_per_s": len(texts) / raw_s,
        "pipeline_overhead": build_s / raw_s - 1,
    }


# --- Everything -----------------------------------------------------------------------------


def run(settings: Settings | None = None, quick: bool = False) -> dict:
    """The whole benchmark. `quick` trims repeats and baselines (for tests), same keys."""
    from ftchat.api import Assistant

    settings = settings or Settings()
    repeats = 1 if quick else 3
    result: dict = {"quick": quick, "machine": machine(settings)}
    threads = result["machine"]["torch_threads"]
    _log(f"{result['machine']['cpu']}, {threads} torch threads, dtype {result['machine']['dtype']}")
    result["memory_bandwidth_gbs"] = memory_bandwidth_gbs(threads)

    # Cold starts first, while this process holds no model (the machine is quieter).
    assistant = Assistant(settings)
    assistant.index  # noqa: B018 - a stale or missing index is built now, not inside a timing
    result.update(_bench_cold_starts(settings, quick))
    _log("retrieval")
    result.update(bench_retrieval(assistant, repeats))
    result.update(_bench_model(assistant, result, quick, repeats))
    result.update(_bench_float32_path(assistant, quick))
    result["presets"] = bench_presets(assistant, quick)
    result.update(_bench_baselines(assistant, result["memory_bandwidth_gbs"], quick, repeats))

    _log("index build: the guide")
    result["index_build_s"], result["index_build_embedded"] = bench_guide_index(settings, 1 if quick else 2)
    result["index_chunks"] = len(assistant.index)
    pages = 200 if quick else 2000
    _log(f"index build: a generated corpus of {pages} pages")
    result.update(bench_large_corpus(
        settings, assistant.retriever.embedder, pages, [c.text for c in assistant.index.chunks]))

    for name in ("decode", "prefill"):
        result[f"{name}_speedup"] = _ratio(
            result[f"{name}_tokens_per_s"], result[f"baseline_{name}_tokens_per_s"])
    result["note"] = (
        "Medians after warm-up; the CPU may be shared with other work (see machine.load_average), "
        "so compare ratios within one run rather than absolute times across runs."
    )
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}


def _bench_cold_starts(settings: Settings, quick: bool) -> dict:
    _log("cold start to a first answer (fresh process, warm caches)")
    cold = [cold_start_answer(settings, ANSWER_QUESTIONS[0]) for _ in range(1 if quick else 3)]
    result = {
        "cold_start_answer_s": _p50([c["seconds"] for c in cold]),
        "cold_start_exit_s": _p50([c["exit_seconds"] for c in cold]),
        "peak_rss_mb": max(c["peak_rss_mb"] for c in cold),
        "cold_start_answer_ok": all(c["ok"] and c["answerable"] and c["citations"] for c in cold),
    }
    _log("cold start to a usable page")
    result["cold_start_page_s"] = cold_start_page(settings)
    _log("first visible text on the page (its own event stream)")
    questions = ANSWER_QUESTIONS[:2] if quick else ANSWER_QUESTIONS
    result.update(bench_first_visible_text(settings, questions, 1 if quick else 3))
    return result


def _bench_model(assistant, so_far: dict, quick: bool, repeats: int) -> dict:
    """The configured model: load, decoding against the bandwidth bound, whole answers."""
    from ftchat.models.loader import get_generator

    _log(f"model load ({so_far['machine']['dtype']}) and decoding")
    started = time.perf_counter()
    generator = get_generator(assistant.settings)
    result = {"model_load_s": generator.load_seconds or time.perf_counter() - started}
    result.update(bench_decode(assistant, generator, repeats))
    so_far["machine"]["decoder"] = result.pop("decoder")
    so_far["machine"]["quantization"] = getattr(generator.decoder, "quantization", generator.dtype)
    bound = so_far["memory_bandwidth_gbs"] * 1e9 / result["weight_bytes"]
    result["bandwidth_bound_tokens_per_s"] = bound
    result["decode_fraction_of_bound"] = result["decode_tokens_per_s"] / bound
    _log("answers")
    questions = ANSWER_QUESTIONS[:2] if quick else ANSWER_QUESTIONS
    result.update(bench_answers(assistant, questions, 1 if quick else 2))
    return result


def _same_index(assistant, settings: Settings):
    """An Assistant with other model settings over `assistant`'s already open index and
    retriever, so each answerer is timed on the same retrieval without opening them again."""
    from ftchat.api import Assistant

    other = Assistant(settings)
    other._index, other._retriever = assistant.index, assistant.retriever
    return other


def _bench_float32_path(assistant, quick: bool) -> dict:
    """ftchat's own float32 decoding, in this run, where the configured dtype is another:
    its answers (what the faster weights save) and its next-token agreement with them."""
    from ftchat.models.loader import get_generator

    generator = get_generator(assistant.settings)
    if generator.dtype == "float32":
        return {"agreement_prompts": 0, "agreement_with_float32": None, "float32_answer_ms_p50": None}
    settings = replace(assistant.settings, dtype="float32", decoder="auto")
    _log("ftchat's float32 path: answers, and teacher-forced agreement")
    reference = get_generator(settings)
    questions = ANSWER_QUESTIONS[:2] if quick else ANSWER_QUESTIONS
    answers = bench_answers(_same_index(assistant, settings), questions, 1 if quick else 2)
    result = {"float32_first_token_ms_p50": answers["first_token_ms_p50"],
              "float32_answer_ms_p50": answers["answer_ms_p50"]}
    questions = agreement_questions(assistant.settings, 3 if quick else 30)
    result.update(bench_agreement(assistant, generator, reference, questions))
    return result


def bench_presets(assistant, quick: bool) -> dict:
    """Both bundled answerers, base and guide-tuned, the same way in this one run: their
    whole answers (what the tuned model's longer writing costs) and a fresh process's peak
    memory, so the choice of default is made on one machine's figures."""
    from ftchat.models.presets import DEFAULT_MODEL, GUIDE_MODEL

    figures = {}
    questions = ANSWER_QUESTIONS[:2] if quick else ANSWER_QUESTIONS
    for name in (DEFAULT_MODEL, GUIDE_MODEL):
        _log(f"answers with the preset {name}")
        settings = replace(assistant.settings, model=name)
        answers = bench_answers(_same_index(assistant, settings), questions, 1 if quick else 2)
        cold = cold_start_answer(settings, questions[0])
        figures[name] = {**answers, "peak_rss_mb": cold["peak_rss_mb"],
                         "cold_start_answer_s": cold["seconds"]}
    return figures


def _bench_baselines(assistant, bandwidth: float, quick: bool, repeats: int) -> dict:
    """float32 weights decoded by transformers' generate(), in this same run."""
    from ftchat.models.loader import get_generator

    settings = assistant.settings
    _log("baseline: float32 decoding with transformers")
    base_settings = replace(settings, dtype="float32", decoder="transformers")
    base_gen = get_generator(base_settings)
    base = bench_decode(assistant, base_gen, repeats)
    result = {
        "baseline_decoder": base["decoder"],
        "baseline_decode_tokens_per_s": base["decode_tokens_per_s"],
        "baseline_prefill_tokens_per_s": base["prefill_tokens_per_s"],
        "baseline_weight_bytes": base["weight_bytes"],
        "baseline_bandwidth_bound_tokens_per_s": bandwidth * 1e9 / base["weight_bytes"],
        "baseline_model_load_s": base_gen.load_seconds,
        "baseline_first_token_ms_p50": None,
        "baseline_answer_ms_p50": None,
        "baseline_cold_start_answer_s": None,
        "baseline_peak_rss_mb": None,
    }
    if quick:
        return result
    _log("baseline: float32 answers")
    base_answers = bench_answers(_same_index(assistant, base_settings), ANSWER_QUESTIONS[:3], 1)
    result["baseline_first_token_ms_p50"] = base_answers["first_token_ms_p50"]
    result["baseline_answer_ms_p50"] = base_answers["answer_ms_p50"]
    _log("baseline: fresh process, float32, no weight cache (dequantizes the GGUF)")
    question = ANSWER_QUESTIONS[0]
    with tempfile.TemporaryDirectory(prefix="ftchat-bench-cache-") as tmp:
        naive = cold_start_answer(settings, question, FTCHAT_DTYPE="float32", FTCHAT_CACHE_DIR=tmp,
                                  FTCHAT_DECODER="transformers")
    result["baseline_cold_start_answer_s"] = naive["seconds"]
    result["baseline_peak_rss_mb"] = naive["peak_rss_mb"]
    result["baseline_cold_start_warm_cache_float32_s"] = cold_start_answer(
        settings, question, FTCHAT_DTYPE="float32", FTCHAT_DECODER="transformers")["seconds"]
    return result


# --- Output -----------------------------------------------------------------------------------


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _limit(m: dict) -> str:
    return f" (oneDNN limited to {m['onednn_isa_limit']})" if m.get("onednn_isa_limit") else ""


def markdown(r: dict) -> str:
    m = r["machine"]
    rows = [
        ("retrieval, median / p95",
         f"{_fmt(r['retrieval_ms_p50'], ' ms')} / {_fmt(r['retrieval_ms_p95'], ' ms')}",
         f"dense only: {_fmt(r['baseline_dense_retrieval_ms_p50'], ' ms')}", "≤ 20 ms"),
        ("first token, median / p95",
         f"{_fmt(r['first_token_ms_p50'], ' ms', 0)} / {_fmt(r['first_token_ms_p95'], ' ms', 0)}",
         _fmt(r.get("baseline_first_token_ms_p50"), " ms", 0), "≤ 1 s"),
        ("first visible text on the page, median / p95",
         f"{_fmt(r.get('first_visible_text_ms_p50'), ' ms', 0)} / "
         f"{_fmt(r.get('first_visible_text_ms_p95'), ' ms', 0)}", "", "≤ 1 s"),
        ("answer time, median / p95",
         f"{_fmt(r['answer_ms_p50'], ' ms', 0)} / {_fmt(r['answer_ms_p95'], ' ms', 0)}",
         _fmt(r.get("baseline_answer_ms_p50"), " ms", 0), ""),
        ("answer time against ftchat's float32 path, median",
         f"{_fmt(r['answer_ms_p50'], ' ms', 0)} against {_fmt(r.get('float32_answer_ms_p50'), ' ms', 0)} "
         f"({_ratio(r['answer_ms_p50'], r.get('float32_answer_ms_p50'))}×)", "", "≤ 0.6× (AVX2)"),
        ("next-token agreement with float32, teacher-forced",
         f"{_fmt(100 * r['agreement_with_float32'] if r.get('agreement_with_float32') else None, '%')} "
         f"of {r.get('agreement_tokens', 0)} tokens, {r.get('agreement_prompts', 0)} answer prompts",
         "", "≥ 95%"),
        ("decoding", f"{_fmt(r['decode_tokens_per_s'], ' tok/s')} ({r['decode_speedup']}×)",
         _fmt(r["baseline_decode_tokens_per_s"], " tok/s"), "≥ 2.5× baseline (AVX2)"),
        ("decoding / bandwidth bound",
         f"{r['decode_fraction_of_bound']:.0%} of {_fmt(r['bandwidth_bound_tokens_per_s'], ' tok/s')}",
         f"{_fmt(r['baseline_bandwidth_bound_tokens_per_s'], ' tok/s')} bound", ""),
        ("prefill", f"{_fmt(r['prefill_tokens_per_s'], ' tok/s', 0)} ({r['prefill_speedup']}×)",
         _fmt(r["baseline_prefill_tokens_per_s"], " tok/s", 0), ""),
        ("cold start → first answer", _fmt(r["cold_start_answer_s"], " s"),
         _fmt(r.get("baseline_cold_start_answer_s"), " s") + " (no weight cache)", "≤ 4 s"),
        ("cold start → usable page", _fmt(r["cold_start_page_s"], " s"), "", "≤ 4 s"),
        ("model load", _fmt(r["model_load_s"], " s"), _fmt(r["baseline_model_load_s"], " s"), ""),
        ("peak memory after answering", _fmt(r["peak_rss_mb"], " MB", 0),
         _fmt(r.get("baseline_peak_rss_mb"), " MB", 0), "≤ 800 MB"),
        ("index build, the guide",
         f"{_fmt(r['index_build_s'], ' s')} ({r['index_chunks']} chunks; "
         f"{r.get('index_build_embedded', 'all')} texts embedded, the rest shipped)", "", "≤ 10 s"),
        (f"index build, {r['large_corpus_pages']} generated pages",
         f"{_fmt(r['large_index_chunks_per_s'], ' chunks/s')} "
         f"({r['pipeline_overhead']:+.0%} vs raw embedder)",
         f"raw embedder: {_fmt(r['embedder_raw_chunks_per_s'], ' chunks/s')}", "overhead ≤ 25 %"),
    ]
    for name, p in r.get("presets", {}).items():
        modes = ", ".join(f"{k} {v}" for k, v in p["answer_modes"].items())
        rows.append((f"preset {name}: first token / answer, median; peak memory",
                     f"{_fmt(p['first_token_ms_p50'], ' ms', 0)} / {_fmt(p['answer_ms_p50'], ' ms', 0)}; "
                     f"{_fmt(p['peak_rss_mb'], ' MB', 0)}", modes, ""))
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads; "
        f"ISA {m.get('isa', 'n/a')}{_limit(m)}; bf16 {'yes' if m['bf16'] else 'no'}, "
        f"AMX {'yes' if m['amx'] else 'no'}, int4 kernels {'yes' if m.get('int4_kernels') else 'no'}, "
        f"int8 kernels {'yes' if m['int8_kernels'] else 'no'}; generator dtype **{m['dtype']}** "
        f"(quantization: {m.get('quantization', 'n/a')}), "
        f"decoder {m.get('decoder', 'n/a')} (baseline: float32, {r.get('baseline_decoder', 'n/a')}); "
        f"memory read bandwidth {r['memory_bandwidth_gbs']:.1f} GB/s; load average {m['load_average']}.",
        "",
        "| measure | ftchat | naive baseline | target |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    return "\n".join(lines) + "\n"


def write(result: dict, json_path: Path, markdown_path: Path | None = None) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(markdown(result), encoding="utf-8")


