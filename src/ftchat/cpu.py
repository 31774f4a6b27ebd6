"""What this CPU and torch build can run fast: the one reader of /proc/cpuinfo."""

from __future__ import annotations

import functools
import os
import platform


@functools.cache
def cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty where it does not exist)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    break  # every processor repeats the same block; the first one is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports."""
    return set(cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


def isa() -> str:
    """The vector instructions torch's own kernels run with here ("AVX2", "AVX512", ...):
    ATen's choice, which ATEN_CPU_CAPABILITY=avx2 lowers to emulate an AVX2-only CPU."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # an older torch
        return "unknown"


def onednn_isa_limit() -> str:
    """ONEDNN_MAX_CPU_ISA as oneDNN itself reads it (its own variable, not an ftchat
    setting): the highest instruction set oneDNN may use, "" when unlimited."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return "" if limit in ("", "ALL", "DEFAULT") else limit


@functools.cache
def bf16_native() -> bool:
    """True when matrix products in bfloat16 run on native instructions, not emulation:
    the CPU has them, and neither torch nor oneDNN is held below them."""
    if not cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return False
    limit = onednn_isa_limit()
    if limit and not any(name in limit for name in ("BF16", "AMX", "AVX10")):
        return False
    if not isa().startswith("AVX512"):
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available())


def int4_kernels() -> bool:
    """True where torch's int4 weight-only kernel runs here and agrees with F.linear."""
    from .llama import int4_available

    return int4_available()


@functools.cache
def int8_supported() -> bool:
    """True where torch has fast kernels for dynamically quantized linears (x86: fbgemm)."""
    import torch

    return bool(set(torch.backends.quantized.supported_engines) & {"fbgemm", "x86"})


def apply_threads(threads: int) -> int:
    """Torch's thread count after applying `threads` (0 keeps torch's own choice, one per
    physical core)."""
    import torch

    if threads > 0 and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch.get_num_threads()
