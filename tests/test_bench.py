"""`ftchat bench --json --quick`: the keys other tools read, with sane values (not timings)."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest
from guide_fixtures import FTCHAT

from ftchat.config import REPO_ROOT
from ftchat.tools.bench import cold_start, probe

# What an AVX2-only CPU offers, on a machine that has more: ATen's and oneDNN's own switches.
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

REQUIRED = [
    "machine", "retrieval_ms_p50", "first_token_ms_p50", "answer_ms_p50", "decode_tokens_per_s",
    "baseline_decode_tokens_per_s", "bandwidth_bound_tokens_per_s", "cold_start_answer_s",
    "cold_start_page_s", "peak_rss_mb", "index_build_s", "first_visible_text_ms_p50", "quiz_grading_ms_p50",
    "evidence_ms_p50", "unit_scoring_ms_p50",
]


def test_machine_reports_cpu_threads_and_dtype():
    from ftchat.config import Settings

    m = probe.machine(Settings())
    assert m["cpu"] and m["cores"] >= 1 and m["torch_threads"] >= 1
    assert m["dtype"] in {"float32", "bfloat16", "int4", "int8"}
    assert isinstance(m["bf16"], bool) and isinstance(m["amx"], bool)
    assert m["isa"] and isinstance(m["int4_kernels"], bool)


# Bytes per weight of each float generator dtype; the baseline always decodes float32 weights.
BYTES_PER_WEIGHT = {"float32": 4, "bfloat16": 2}


def check_consistent(result: dict) -> None:
    """What any bench result must satisfy on any machine (no timing targets): each figure in
    the unit its key names, each derived figure computed from the ones it is derived from,
    and no decoding faster than the memory-bandwidth bound the same run reports."""
    if "evidence_ms_p50" in result:  # what scoring adds is the difference of the two medians
        assert result["unit_scoring_ms_p50"] == pytest.approx(  # each rounded to 0.001 ms
            result["evidence_ms_p50"] - result["evidence_rules_ms_p50"], abs=2e-3)
        assert result["unit_scorer"] is True  # the shipped scorer loads
    bandwidth = result["memory_bandwidth_gbs"]
    # A CPU reads between a few and a few hundred GB/s; MB/s or bytes/s would be far outside.
    assert 0.5 <= bandwidth <= 2000, f"{bandwidth} GB/s is no machine's read bandwidth"
    for prefix in ("", "baseline_"):
        bound = result[f"{prefix}bandwidth_bound_tokens_per_s"]
        weight_bytes = result[f"{prefix}weight_bytes"]
        assert bound == pytest.approx(bandwidth * 1e9 / weight_bytes, rel=1e-3), prefix
        decode = result[f"{prefix}decode_tokens_per_s"]
        assert 0 < decode <= bound, f"{prefix}decoding at {decode} tok/s beats its bound {bound}"
        # A prompt is read in one batched pass, so prefill is faster than decoding.
        assert result[f"{prefix}prefill_tokens_per_s"] > decode, prefix
    assert result["decode_fraction_of_bound"] == pytest.approx(
        result["decode_tokens_per_s"] / result["bandwidth_bound_tokens_per_s"], abs=1e-3)
    for name in ("decode", "prefill"):
        assert result[f"{name}_speedup"] == pytest.approx(
            result[f"{name}_tokens_per_s"] / result[f"baseline_{name}_tokens_per_s"], abs=0.01), name
    # Weight bytes per token follow the dtype: the same model, float32 in the baseline. int8
    # keeps the output layer in float, so it lies between one and four bytes per weight.
    per_weight = result["weight_bytes"] / result["baseline_weight_bytes"] * 4
    dtype = result["machine"]["dtype"]
    if dtype == "int8":
        assert 1 <= per_weight < 4, per_weight
    elif dtype == "int4":  # blocks at 5/8 of a byte per weight, the output layer in bfloat16
        assert 0.625 < per_weight < 2, per_weight
    else:
        assert per_weight == pytest.approx(BYTES_PER_WEIGHT[dtype], rel=0.02), (dtype, per_weight)
    for name in ("retrieval_ms", "first_token_ms", "answer_ms"):
        assert 0 < result[f"{name}_p50"] <= result[f"{name}_p95"], name
    assert result["first_token_ms_p50"] <= result["answer_ms_p50"]
    if "learned_ranking_ms_p50" in result:  # results from before the learned ranker lack it
        assert result["learned_ranking_ms_p50"] == pytest.approx(
            result["retrieval_ms_p50"] - result["hybrid_retrieval_ms_p50"], abs=2e-3)
        assert result["learned_ranking_cold_start_s"] == pytest.approx(
            result["cold_start_with_ranker_s"] - result["cold_start_without_ranker_s"], abs=2e-3)
        assert result["learned_ranking_peak_mb"] == pytest.approx(
            result["peak_rss_with_ranker_mb"] - result["peak_rss_without_ranker_mb"], abs=2e-3)
    if result.get("first_visible_text_ms_p50") is not None:  # results from before it existed lack it
        assert 0 < result["first_visible_text_ms_p50"] <= result["first_visible_text_ms_p95"]
        assert result["first_visible_text_missing"] == 0
    if result.get("agreement_with_float32") is not None:
        assert result["machine"]["dtype"] != "float32"
        assert 0 < result["agreement_with_float32"] <= 1 and result["agreement_tokens"] > 0
    assert result["cold_start_answer_s"] <= result["cold_start_exit_s"]
    assert 50 < result["peak_rss_mb"] < 16_000  # MB, not KiB or bytes
    assert result["large_index_chunks_per_s"] == pytest.approx(
        result["large_corpus_chunks"] / result["large_index_build_s"], rel=1e-2)


def test_memory_bandwidth_is_bytes_read_over_the_best_run_in_gb_per_s(monkeypatch):
    """The unit and the choice of run, on a fake clock: three runs of 4, 2 and 8 ms over
    8 MiB must give 8 MiB / 2 ms in GB/s (the least disturbed run counts)."""
    ticks = iter([0.0, 0.004, 1.0, 1.002, 2.0, 2.008])
    monkeypatch.setattr(probe, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert probe.memory_bandwidth_gbs(2, megabytes=8, repeats=3) == pytest.approx(8 * 2**20 / 0.002 / 1e9)


def test_memory_bandwidth_is_plausible_for_a_machine():
    bandwidth = probe.memory_bandwidth_gbs(1, megabytes=32, repeats=3)
    assert 0.5 <= bandwidth <= 2000, f"{bandwidth} GB/s"


@pytest.mark.parametrize("name", ["results.json", "results-avx2.json"])
def test_committed_bench_results_are_consistent(name):
    """bench/results.json (a bf16 CPU) and results-avx2.json (emulated AVX2-only), whose
    figures the README quotes."""
    result = json.loads((REPO_ROOT / "bench" / name).read_text(encoding="utf-8"))
    check_consistent(result)
    if name == "results-avx2.json":
        assert result["machine"]["isa"] == "AVX2" and result["machine"]["dtype"] == "int4"


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.subprocess
def test_quick_bench_json_has_the_required_keys(guide_settings, tmp_path):
    """Run as on an AVX2-only laptop (torch's and oneDNN's own switches lower what they use),
    so that the path most laptops get, int4 weights, is the one benchmarked here."""
    out = tmp_path / "results.json"
    table = tmp_path / "results.md"
    env = {**guide_settings.child_environment(), **AVX2_ONLY}
    proc = subprocess.run(
        [str(FTCHAT), "bench", "--json", "--quick", "--write", str(out), "--markdown", str(table)],
        env=env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    for key in REQUIRED:
        assert key in result, key
    for key in REQUIRED[1:]:
        assert result[key] is not None and result[key] > 0, key
    check_consistent(result)
    assert result["cold_start_answer_ok"]
    assert result["large_corpus_chunks"] >= 200
    assert "| decoding |" in table.read_text()
    # Both bundled answerers, measured the same way in the same run.
    assert set(result["presets"]) == {"smollm2-135m", "smollm2-135m-guide"}
    for figures in result["presets"].values():
        assert figures["answer_ms_p50"] > 0 and figures["peak_rss_mb"] > 0
    assert "| preset smollm2-135m-guide: first token / answer" in table.read_text()
    # The emulation took effect, the runtime and quantization it chose are shown, and the
    # int4 answers follow float32's tokens (97.9% on 30 prompts when measured).
    machine = result["machine"]
    assert machine["isa"] == "AVX2" and machine["onednn_isa_limit"] == "AVX2" and not machine["bf16"]
    assert machine["dtype"] == "int4" and machine["decoder"] == "ftchat-llama (int4-weights)"
    assert "ISA AVX2 (oneDNN limited to AVX2)" in table.read_text() and "4-bit groups" in table.read_text()
    assert result["agreement_prompts"] == 3 and result["agreement_with_float32"] >= 0.9
    assert result["float32_answer_ms_p50"] > 0


def test_a_childs_peak_memory_is_its_own_not_this_process(tmp_path):
    """wait4's ru_maxrss counts what a child shared with its parent until exec: late in a bench
    run, with models loaded in the parent, it reported 1,583 MB for a 640 MB child."""
    import sys

    held = bytearray(400 << 20)  # 400 MB resident here
    held[:: 4096] = b"x" * len(held[:: 4096])
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(2)"],
                             stdout=subprocess.PIPE)
    child.stdout.readline()
    peak = cold_start._peak_rss_mb(child.pid)
    child.wait()
    assert peak is not None and 1 < peak < 200, peak
    del held
