"""`ftchat bench`: how fast ftchat is on this machine, next to a naive baseline run alongside.

Every figure is a median (and p95 where it is a distribution) over repeated runs after a
warm-up. Each optimised figure sits next to the same figure for the naive path measured in
the same run (float32 weights, dense retrieval only, no weight cache, a fresh model load),
because ratios travel across machines and absolute times do not. Progress goes to stderr.

The physical limit for decoding is memory bandwidth: every weight is read once per token,
so tokens/s can never beat (read bandwidth) / (weight bytes). The bandwidth is measured here
with numpy, and decoding is reported as a fraction of that bound.

The modules, in the order a run uses them:

    probe        the machine: CPU, threads, dtype chosen, memory read bandwidth
    cold_start   fresh `ftchat` processes: to a first answer; peak memory
    page_client  a fresh page: to usable, then first visible text on its own event stream
    timings      in this process: retrieval, decoding, whole answers, agreement, index builds
    runner       `run`: all of the above with their baselines, as one result
    report       the result as JSON and as the Markdown table the README shows
"""

from ftchat.tools.bench.report import markdown, write
from ftchat.tools.bench.runner import run

__all__ = ["markdown", "run", "write"]
