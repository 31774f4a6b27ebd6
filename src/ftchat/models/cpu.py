"""What this CPU and torch build can run fast: the one reader of /proc/cpuinfo."""

from __future__ import annotations

import functools
import os
import platform

from ftchat.config import checked_dtype


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
    from ftchat.models.quant import int4_available

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


def resolve_dtype(value: str) -> str:
    """'auto' is bfloat16 where the CPU has native bf16 instructions, else int4 where torch's
    int4 kernel runs, else float32.

    Measured on the eval set (idle 2-core EPYC with avx512_bf16): bfloat16 gave exactly the
    float32 figures on every answer metric, with half the weight memory and ~1.3x faster
    decoding. Without native bf16 (most laptops: AVX2 only) oneDNN emulates bfloat16
    products: on an emulated AVX2 CPU it read prompts at 126 tok/s against float32's 485
    (decoding 33.5 against 21.5 tok/s). There the blocks' weights stay in the bundled GGUF's
    own 4-bit groups instead (int4: quant.py), an eighth of float32's bytes per token, with
    float32 between the products: 42-50 tok/s (README, "Speed", has the figures). int8 (dynamic
    quantization) agreed with float32's next token only 64% of the time on answer prompts
    and visibly hurt the text, so it stays opt-in.
    """
    value = checked_dtype(value)
    if value != "auto":
        return value
    if bf16_native():
        return "bfloat16"
    return "int4" if int4_kernels() else "float32"
