"""`ftchat bench --json --quick`: the keys other tools read, with sane values (not timings)."""

from __future__ import annotations

import json
import subprocess

import pytest
from guide_fixtures import FTCHAT, guide_env

from ftchat import bench

REQUIRED = [
    "machine", "retrieval_ms_p50", "first_token_ms_p50", "answer_ms_p50", "decode_tokens_per_s",
    "baseline_decode_tokens_per_s", "bandwidth_bound_tokens_per_s", "cold_start_answer_s",
    "cold_start_page_s", "peak_rss_mb", "index_build_s",
]


def test_machine_reports_cpu_threads_and_dtype():
    from ftchat.config import Settings

    m = bench.machine(Settings())
    assert m["cpu"] and m["cores"] >= 1 and m["torch_threads"] >= 1
    assert m["dtype"] in {"float32", "bfloat16", "int8"}
    assert isinstance(m["bf16"], bool) and isinstance(m["amx"], bool)


def test_memory_bandwidth_is_measured():
    assert bench.memory_bandwidth_gbs(1, megabytes=32, repeats=2) > 0.1


@pytest.mark.slow
def test_quick_bench_json_has_the_required_keys(guide_settings, tmp_path):
    out = tmp_path / "results.json"
    table = tmp_path / "results.md"
    proc = subprocess.run(
        [str(FTCHAT), "bench", "--json", "--quick", "--write", str(out), "--markdown", str(table)],
        env=guide_env(guide_settings), capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    for key in REQUIRED:
        assert key in result, key
    for key in REQUIRED[1:]:
        assert result[key] is not None and result[key] > 0, key
    assert result["peak_rss_mb"] < 16_000
    assert 0 < result["decode_fraction_of_bound"] < 1.5
    assert result["cold_start_answer_ok"]
    assert result["large_corpus_chunks"] >= 200
    assert "| decoding |" in table.read_text()
