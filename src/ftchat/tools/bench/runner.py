"""`run`: the whole benchmark, each optimised figure beside the naive baseline's, measured in
the same run (float32 weights, dense retrieval only, no weight cache, a fresh model load)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace

from ftchat.config import RANKER_FILE, Settings
from ftchat.tools.bench.cold_start import cold_start_answer
from ftchat.tools.bench.page_client import bench_first_visible_text
from ftchat.tools.bench.probe import machine, memory_bandwidth_gbs
from ftchat.tools.bench.timings import (
    ANSWER_QUESTIONS,
    agreement_questions,
    bench_agreement,
    bench_answers,
    bench_decode,
    bench_evidence,
    bench_grading,
    bench_guide_index,
    bench_large_corpus,
    bench_retrieval,
    log,
    p50,
    ratio,
)


def run(settings: Settings | None = None, quick: bool = False) -> dict:
    """The whole benchmark. `quick` (for tests) asks one question where a full run asks all,
    with fewer repeats and baselines; the keys are the same."""
    from ftchat.api import Assistant

    settings = settings or Settings()
    repeats = 1 if quick else 3
    result: dict = {"quick": quick, "machine": machine(settings)}
    threads = result["machine"]["torch_threads"]
    log(f"{result['machine']['cpu']}, {threads} torch threads, dtype {result['machine']['dtype']}")
    result["memory_bandwidth_gbs"] = memory_bandwidth_gbs(threads)

    # Cold starts first, while this process holds no model (the machine is quieter).
    assistant = Assistant(settings)
    assistant.load_index()  # a stale or missing index is built now, not inside a timing
    result.update(_bench_cold_starts(settings, quick))
    log("retrieval")
    result.update(bench_retrieval(assistant, repeats))
    log("quiz grading")
    result.update(bench_grading(assistant, repeats))
    log("choosing evidence")
    result.update(bench_evidence(assistant, repeats))
    result.update(_bench_model(assistant, result, quick, repeats))
    result.update(_bench_float32_path(assistant, quick))
    result["presets"] = bench_presets(assistant, quick)
    result.update(_bench_baselines(assistant, result["memory_bandwidth_gbs"], quick, repeats))

    log("index build: the guide")
    result["index_build_s"], result["index_build_embedded"] = bench_guide_index(settings, 1 if quick else 2)
    result["index_chunks"] = len(assistant.index)
    pages = 200 if quick else 2000
    log(f"index build: a generated corpus of {pages} pages")
    result.update(bench_large_corpus(
        settings, assistant.retriever.embedder, pages, [c.text for c in assistant.index.chunks]))

    for name in ("decode", "prefill"):
        result[f"{name}_speedup"] = ratio(
            result[f"{name}_tokens_per_s"], result[f"baseline_{name}_tokens_per_s"])
    result["note"] = (
        "Medians after warm-up; the CPU may be shared with other work (see machine.load_average), "
        "so compare ratios within one run rather than absolute times across runs."
    )
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}


def _answer_questions(quick: bool) -> list[str]:
    """The questions whose whole answers are timed: one in a quick run, every one otherwise."""
    return ANSWER_QUESTIONS[:1] if quick else ANSWER_QUESTIONS


def _bench_cold_starts(settings: Settings, quick: bool) -> dict:
    log("cold start to a first answer (fresh process, warm caches), with and without the learned ranker")
    unranked, ranked = [], []
    ranker = str(settings.ranker_file or RANKER_FILE)
    for _ in range(1 if quick else 3):  # paired, so that both meet the same machine
        unranked.append(cold_start_answer(settings, ANSWER_QUESTIONS[0], FTCHAT_RANKER="off"))
        ranked.append(cold_start_answer(settings, ANSWER_QUESTIONS[0], FTCHAT_RANKER=ranker))
    cold = ranked if settings.ranker_file else unranked  # the user's own configuration
    result = {
        "cold_start_answer_s": p50([c["seconds"] for c in cold]),
        "cold_start_exit_s": p50([c["exit_seconds"] for c in cold]),
        "peak_rss_mb": max(c["peak_rss_mb"] for c in cold),
        "cold_start_answer_ok": all(c["ok"] and c["answerable"] and c["citations"] for c in cold),
        "cold_start_without_ranker_s": p50([c["seconds"] for c in unranked]),
        "peak_rss_without_ranker_mb": max(c["peak_rss_mb"] for c in unranked),
        "cold_start_with_ranker_s": p50([c["seconds"] for c in ranked]),
        "peak_rss_with_ranker_mb": max(c["peak_rss_mb"] for c in ranked),
    }
    result["learned_ranking_cold_start_s"] = (
        result["cold_start_with_ranker_s"] - result["cold_start_without_ranker_s"])
    result["learned_ranking_peak_mb"] = (
        result["peak_rss_with_ranker_mb"] - result["peak_rss_without_ranker_mb"])
    log("cold start to a usable page, and first visible text on it (its own event stream)")
    page = bench_first_visible_text(settings, _answer_questions(quick), 1 if quick else 3)
    result["cold_start_page_s"] = page.pop("cold_start_page_s")
    result.update(page)
    return result


def _bench_model(assistant, so_far: dict, quick: bool, repeats: int) -> dict:
    """The configured model: load, decoding against the bandwidth bound, whole answers."""
    from ftchat.models.loader import get_generator

    log(f"model load ({so_far['machine']['dtype']}) and decoding")
    started = time.perf_counter()
    generator = get_generator(assistant.settings)
    result = {"model_load_s": generator.load_seconds or time.perf_counter() - started}
    result.update(bench_decode(assistant, generator, repeats))
    so_far["machine"]["decoder"] = result.pop("decoder")
    so_far["machine"]["quantization"] = getattr(generator.decoder, "quantization", generator.dtype)
    bound = so_far["memory_bandwidth_gbs"] * 1e9 / result["weight_bytes"]
    result["bandwidth_bound_tokens_per_s"] = bound
    result["decode_fraction_of_bound"] = result["decode_tokens_per_s"] / bound
    log("answers")
    questions = _answer_questions(quick)
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
    log("ftchat's float32 path: answers, and teacher-forced agreement")
    reference = get_generator(settings)
    questions = _answer_questions(quick)
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
    questions = _answer_questions(quick)
    for name in (DEFAULT_MODEL, GUIDE_MODEL):
        log(f"answers with the preset {name}")
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
    log("baseline: float32 decoding with transformers")
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
    log("baseline: float32 answers")
    base_answers = bench_answers(_same_index(assistant, base_settings), ANSWER_QUESTIONS[:3], 1)
    result["baseline_first_token_ms_p50"] = base_answers["first_token_ms_p50"]
    result["baseline_answer_ms_p50"] = base_answers["answer_ms_p50"]
    log("baseline: fresh process, float32, no weight cache (dequantizes the GGUF)")
    question = ANSWER_QUESTIONS[0]
    with tempfile.TemporaryDirectory(prefix="ftchat-bench-cache-") as tmp:
        naive = cold_start_answer(settings, question, FTCHAT_DTYPE="float32", FTCHAT_CACHE_DIR=tmp,
                                  FTCHAT_DECODER="transformers")
    result["baseline_cold_start_answer_s"] = naive["seconds"]
    result["baseline_peak_rss_mb"] = naive["peak_rss_mb"]
    result["baseline_cold_start_warm_cache_float32_s"] = cold_start_answer(
        settings, question, FTCHAT_DTYPE="float32", FTCHAT_DECODER="transformers")["seconds"]
    return result
