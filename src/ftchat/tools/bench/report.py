"""A bench result written out: the JSON other tools read, and the Markdown table the README
shows (bench/results.md)."""

from __future__ import annotations

import json
from pathlib import Path

from ftchat.tools.bench.timings import ratio


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _limit(m: dict) -> str:
    return f" (oneDNN limited to {m['onednn_isa_limit']})" if m.get("onednn_isa_limit") else ""


def markdown(r: dict) -> str:
    m = r["machine"]
    rows = [
        ("hybrid retrieval, median / p95",
         f"{_fmt(r.get('hybrid_retrieval_ms_p50'), ' ms')} / {_fmt(r.get('hybrid_retrieval_ms_p95'), ' ms')}",
         f"dense only: {_fmt(r['baseline_dense_retrieval_ms_p50'], ' ms')}", "≤ 20 ms"),
        ("learned ranking: added per question / to a cold start / to peak memory",
         f"{_fmt(r.get('learned_ranking_ms_p50'), ' ms')} / "
         f"{_fmt(r.get('learned_ranking_cold_start_s'), ' s', 2)} / "
         f"{_fmt(r.get('learned_ranking_peak_mb'), ' MB', 0)}"
         + ("" if r.get("learned_ranker", True) else " (ranker missing: hybrid order)"),
         f"retrieval with it: {_fmt(r['retrieval_ms_p50'], ' ms')} median", "≤ 150 ms / 0.5 s / 60 MB"),
        ("choosing evidence: median / p95 (added by the learned scorer)",
         f"{_fmt(r.get('evidence_ms_p50'), ' ms')} / {_fmt(r.get('evidence_ms_p95'), ' ms')} "
         f"({_fmt(r.get('unit_scoring_ms_p50'), ' ms')})"
         + ("" if r.get("unit_scorer", True) else " (scorer missing: hand rules)"),
         f"hand rules: {_fmt(r.get('evidence_rules_ms_p50'), ' ms')}", "≤ 100 ms added"),
        ("quiz: grading one answer, median / p95",
         f"{_fmt(r.get('quiz_grading_ms_p50'), ' ms')} / {_fmt(r.get('quiz_grading_ms_p95'), ' ms')} "
         f"({r.get('quiz_grading_answers', 0)} answers)", "", "≤ 100 ms"),
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
         f"({ratio(r['answer_ms_p50'], r.get('float32_answer_ms_p50'))}×)", "", "≤ 0.6× (AVX2)"),
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
