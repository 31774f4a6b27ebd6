"""The machine a bench runs on: what the CPU offers, what torch chose, and the memory read
bandwidth that bounds decoding (every weight is read once per token)."""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

from ftchat.config import Settings
from ftchat.models.cpu import resolve_dtype


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
