"""Weights in fewer bytes, computed by torch's own kernels: oneDNN's prepacked linear, the
bundled GGUF's 4-bit groups on torch's int4 kernel, and its 8-bit token embedding rows.

Each kernel is probed once against F.linear and used only where it agrees; llama.py's
decoder picks among them by dtype.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def linear_kernel(dtype: torch.dtype):
    """oneDNN's prepacked linear where it works and agrees with F.linear, else F.linear.

    Returns (pack, apply): pack(weight) is done once per matrix at load time.
    """
    def plain(weight: torch.Tensor) -> torch.Tensor:
        return weight.clone(memory_format=torch.contiguous_format)

    try:
        if not torch.backends.mkldnn.is_available():
            return plain, F.linear
        reorder = torch.ops.mkldnn._reorder_linear_weight
        pointwise = torch.ops.mkldnn._linear_pointwise

        def pack(weight: torch.Tensor) -> torch.Tensor:
            return reorder(weight.contiguous(), 1)

        def apply(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            return pointwise(x, weight, None, "none", [], "")

        probe_w = torch.randn(48, 32).to(dtype)
        probe_x = torch.randn(3, 32).to(dtype)
        with torch.inference_mode():
            same = torch.allclose(apply(probe_x, pack(probe_w)).float(), F.linear(probe_x, probe_w).float(),
                                  rtol=1e-2, atol=1e-2)
        return (pack, apply) if same else (plain, F.linear)
    except (AttributeError, RuntimeError):  # an older torch, or a build without these ops
        return plain, F.linear


# Weights in 4-bit groups of GROUP inputs, each group w = low + scale * q with q in 0..15:
# the layout of the bundled GGUF's Q4_1 blocks (llama.cpp sets low = the group's minimum and
# scale = (max - min) / 15), so quantizing their dequantized float32 weights again by each
# group's minimum and maximum gives back exactly the same q, scale and low (a test checks
# the bundled model's matrices). Computing on those blocks reads an eighth of the float32
# bytes per token and keeps every weight's 4-bit step; only each group's scale and offset
# are rounded, to the bfloat16 that torch's kernel takes (see `int4_kernel`).
GROUP = 32


class OffGrid(ValueError):
    """Weights not already on their groups' quantization grid: storing them as groups would
    change them (a merged LoRA update, a model from elsewhere), so int4 does not apply."""


# How far from a step of its group's grid a weight may lie, in steps, and still count as on
# it (the bundled model's lie within float rounding; a merged LoRA update moves them up to
# half a step; with the guide adapter merged, int4 agreed with float32 on 90% of tokens).
ON_STEP = 0.01


def quantize_groups(weight: torch.Tensor,
                    exact: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q as int32 [out, in], scale and low [out, in / GROUP]) of a float matrix; with
    `exact`, OffGrid unless every weight is already on its group's 4-bit grid."""
    rows, columns = weight.shape
    if columns % GROUP:
        raise ValueError(f"{columns} inputs do not split into groups of {GROUP}")
    groups = weight.float().reshape(rows, columns // GROUP, GROUP)
    low, high = torch.aminmax(groups, dim=-1, keepdim=True)
    scale = (high - low) / 15
    # In place after the one subtraction: this runs over every weight at each start.
    position = (groups - low).div_(torch.where(scale > 0, scale, 1.0))
    steps = position.round().clamp_(0, 15)
    if exact and (off := float((position - steps).abs().max())) > ON_STEP:
        raise OffGrid(f"weights lie up to {off:.2f} of a step off their 4-bit groups")
    return steps.to(torch.int32).reshape(rows, columns), scale.squeeze(-1), low.squeeze(-1)


def dequantize_groups(q: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    rows, columns = q.shape
    groups = q.reshape(rows, columns // GROUP, GROUP).float()
    return (groups * scale[..., None] + low[..., None]).reshape(rows, columns)


class EightBitRows:
    """A token embedding table as 8-bit groups of GROUP with one scale each, w = scale * q:
    the GGUF's Q8_0 layout, which the bundled model's float32 table requantizes to bit for
    bit (scale = the group's largest magnitude / 127). Rows are turned back into float32 as
    they are looked up: the table takes a quarter of its float32 memory (28 against 113 MB
    for SmolLM2) and no value changes."""

    def __init__(self, table: torch.Tensor, rows_at_once: int = 4096) -> None:
        rows, columns = table.shape
        if columns % GROUP:
            raise ValueError(f"{columns} columns do not split into groups of {GROUP}")
        self.shape = table.shape
        self.q = torch.empty(rows, columns // GROUP, GROUP, dtype=torch.int8)
        self.scale = torch.empty(rows, columns // GROUP, 1)
        for start in range(0, rows, rows_at_once):  # in slices: whole-table temporaries cost 200 MB
            groups = table[start:start + rows_at_once].float().reshape(-1, columns // GROUP, GROUP)
            scale = groups.abs().amax(-1, keepdim=True) / 127
            position = groups / torch.where(scale > 0, scale, 1.0)
            steps = position.round()
            if (off := float((position - steps).abs().max())) > ON_STEP:
                raise OffGrid(f"embeddings lie up to {off:.2f} of a step off their 8-bit groups")
            self.scale[start:start + rows_at_once] = scale
            self.q[start:start + rows_at_once] = steps

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.q[ids].float() * self.scale[ids]).reshape(*ids.shape, self.shape[1])

    def dequantized(self) -> torch.Tensor:
        return (self.q.float() * self.scale).reshape(self.shape)


@functools.cache
def int4_kernel():
    """torch's int4 weight-only matrix product (ATen's CPU kernel, vectorised for AVX2 and
    AVX-512) as (pack, apply), or None where this torch lacks it or it disagrees with F.linear.

    Activations enter it in bfloat16: with float32 ones the kernel runs a scalar loop about
    ten times slower (measured: 1.8 ms against 0.12 ms for a 3072x576 matrix, one token,
    AVX2). The scales and offsets are bfloat16 too, as the kernel requires, which moves a
    weight by about as much as rounding it to bfloat16 would; everything between the
    products (norms, attention, the residual stream) stays float32.
    """
    try:
        convert = torch.ops.aten._convert_weight_to_int4pack_for_cpu
        product = torch.ops.aten._weight_int4pack_mm_for_cpu
    except AttributeError:
        return None

    def pack(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, scale, low = quantize_groups(weight, exact=True)
        # The kernel computes (q - 8) * scale + zero, so zero = low + 8 * scale.
        scales_and_zeros = torch.stack([scale.t(), (low + 8 * scale).t()], -1)
        return convert(q.contiguous(), 1), scales_and_zeros.to(torch.bfloat16).contiguous()

    def apply(x: torch.Tensor, weight: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return product(x.to(torch.bfloat16), weight[0], GROUP, weight[1]).to(x.dtype)

    try:
        seeded = torch.Generator().manual_seed(0)
        probe = dequantize_groups(*quantize_groups(torch.randn(48, 64, generator=seeded)))
        x = torch.randn(3, 64, generator=seeded)
        with torch.inference_mode():
            got = apply(x, pack(probe))
            expected = F.linear(x, dequantize_groups(*quantize_groups(probe)))
        # bfloat16 activations and scales: about 0.3% off in norm; a wrong layout is 100%.
        agrees = float((got - expected).norm() / expected.norm()) < 0.02
        return (pack, apply) if agrees else None
    except RuntimeError:  # a build whose kernel rejects this layout
        return None


def int4_available() -> bool:
    return int4_kernel() is not None
