"""int4 weights (models/quant.py, llama.py): the bundled GGUF's 4-bit groups on torch's int4 kernel.

What most laptops (AVX2, no native bf16) decode with by default. Checked here: the groups
come back exactly from the float32 weights, the decoder agrees with float32 where it can
and falls back to it where it cannot, and "auto" picks it by what torch and oneDNN may use.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_llama import reference_greedy, tiny_llama

from ftchat.models import quant
from ftchat.models.decoders import build_llama
from ftchat.models.llama import LlamaDecoder
from ftchat.models.quant import GROUP, EightBitRows, dequantize_groups, quantize_groups

pytestmark = pytest.mark.skipif(not quant.int4_available(), reason="this torch has no int4 CPU kernel")

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def four_bit_matrix(rows: int, columns: int, seed: int) -> torch.Tensor:
    """What a Q4_1 file dequantizes to: each group of 32 is low + scale * q, q in 0..15, with
    both ends used (llama.cpp's quantizer takes the group's minimum and maximum), and the
    scale and low float16 numbers."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, columns), generator=generator)
    q[:, ::GROUP], q[:, 1::GROUP] = 0, 15
    scale = (torch.rand(rows, columns // GROUP, generator=generator) * 0.05 + 1e-3).half().float()
    low = (-torch.rand(rows, columns // GROUP, generator=generator) * 0.4).half().float()
    return dequantize_groups(q, scale, low)


def test_four_bit_groups_quantize_back_to_the_same_weights() -> None:
    weight = four_bit_matrix(48, 128, 0)
    q, scale, low = quantize_groups(weight)
    assert q.min() >= 0 and q.max() <= 15
    assert torch.allclose(dequantize_groups(q, scale, low), weight, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="groups of 32"):
        quantize_groups(torch.randn(4, 40))


def eight_bit_table(rows: int, columns: int, seed: int) -> torch.Tensor:
    """What a Q8_0 table dequantizes to: scale * q per group of 32, q in -127..127 with the
    group's largest magnitude at 127, the scale a float16 number."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (rows, columns), generator=generator)
    q[:, ::GROUP] = 127
    scale = (torch.rand(rows, columns // GROUP, generator=generator) * 0.01 + 1e-4).half().float()
    return (q.reshape(rows, -1, GROUP) * scale[..., None]).reshape(rows, columns)


def test_token_embeddings_in_eight_bit_groups_look_up_the_same_rows() -> None:
    table = eight_bit_table(50, 64, 1)
    rows = EightBitRows(table, rows_at_once=7)  # slices that do not divide the table
    assert torch.equal(rows.dequantized(), table)
    ids = torch.tensor([3, 0, 49, 3])
    assert torch.equal(rows[ids], table[ids])
    assert rows.q.dtype == torch.int8


def four_bit_llama():
    """The tiny Llama with every block matrix in exact 4-bit groups and its embeddings in exact
    8-bit groups, as the bundled model's are."""
    model = tiny_llama()
    state = model.state_dict()
    for seed, (name, tensor) in enumerate(state.items()):
        if ".layers." in name and name.endswith("proj.weight"):
            state[name] = four_bit_matrix(*tensor.shape, seed)
    state["model.embed_tokens.weight"] = eight_bit_table(*state["model.embed_tokens.weight"].shape, 99)
    model.load_state_dict(state)
    state = model.state_dict()  # the output layer is tied to the embeddings
    return model, state


def test_int4_decoder_computes_what_float32_computes_on_the_same_weights() -> None:
    model, state = four_bit_llama()
    config = model.config.to_dict()
    exact = LlamaDecoder(config, state, torch.float32)
    int4 = LlamaDecoder(config, state, torch.float32, int4=True)
    assert (int4.weights_dtype, int4.backend) == ("int4", "ftchat-llama (int4-weights)")
    assert exact.weights_dtype == "float32" and "4-bit groups" in int4.quantization
    assert int4.weight_bytes() < exact.weight_bytes() / 2
    prompt = [5, 17, 3, 99, 42, 8, 23]
    got, expected = int4.choices(prompt), exact.choices(prompt)
    keys = torch.zeros(3, 2, 20, 16)
    with torch.inference_mode():
        logits = int4._forward(torch.tensor(prompt), 0, keys, torch.zeros_like(keys))
        reference = model(torch.tensor([prompt])).logits[0, -1]
    # Only bfloat16 rounding differs: the activations at each product and the output layer
    # (1.1% in norm here; a wrong layout or scale is off by 100%).
    assert float((logits - reference).norm() / reference.norm()) < 0.02
    assert sum(a == b for a, b in zip(got, expected, strict=True)) >= len(prompt) - 1


def test_int4_falls_back_to_float32_with_a_warning_where_it_cannot_run(monkeypatch, caplog) -> None:
    model, state = four_bit_llama()
    monkeypatch.setattr(quant, "int4_kernel", lambda: None)  # a torch without the kernel
    with caplog.at_level(logging.WARNING):
        decoder = build_llama(model.config.to_dict(), state, "int4")
    assert decoder.weights_dtype == "float32" and "int4 does not apply" in caplog.text
    assert list(decoder.greedy([1, 2, 3, 4], 10, set())) == reference_greedy(model, [1, 2, 3, 4], 10)


def test_weights_off_the_4_bit_grid_stay_float32(caplog) -> None:
    """A merged LoRA update moves weights off their groups' steps (with the guide adapter,
    int4 agreed with float32 on 90% of tokens): such weights are not requantized."""
    model, state = four_bit_llama()
    name = "model.layers.1.mlp.down_proj.weight"
    state = {**state, name: state[name] + 1e-3 * torch.randn(state[name].shape)}  # the update
    with pytest.raises(quant.OffGrid, match="off their 4-bit groups"):
        LlamaDecoder(model.config.to_dict(), state, torch.float32, int4=True)
    with caplog.at_level(logging.WARNING):
        decoder = build_llama(model.config.to_dict(), state, "int4")
    assert decoder.weights_dtype == "float32" and "off their 4-bit groups" in caplog.text
    table = state["model.embed_tokens.weight"]
    with pytest.raises(quant.OffGrid, match="8-bit groups"):
        quant.EightBitRows(table + 1e-4 * torch.randn(table.shape))


def test_a_prompt_that_opens_like_the_last_one_reads_only_what_follows(monkeypatch) -> None:
    """Every answer prompt opens with the same system prompt: its keys and values are kept
    from the last prompt, and the tokens still match generate() on the whole prompt."""
    model = tiny_llama()
    decoder = LlamaDecoder(model.config.to_dict(), model.state_dict(), torch.float32)
    first = [5, 17, 3, 99, 42, 8, 23, 61]
    second = first[:5] + [70, 71, 72]
    list(decoder.greedy(first, 5, set()))
    read = []
    forward = decoder._forward
    monkeypatch.setattr(decoder, "_forward",
                        lambda ids, *rest, **kw: read.append(len(ids)) or forward(ids, *rest, **kw))
    assert list(decoder.greedy(second, 20, set())) == reference_greedy(model, second, 20)
    assert read[0] == 3  # the five shared tokens were not read again
    read.clear()
    assert list(decoder.greedy(second, 20, set())) == reference_greedy(model, second, 20)
    assert read[0] == 1  # the same prompt again: only its last token, for the first logits


def resolved_dtype(env: dict) -> str:
    code = "from ftchat.models.cpu import resolve_dtype; print(resolve_dtype('auto'))"
    clean = {k: v for k, v in os.environ.items() if k not in AVX2_ONLY and not k.startswith("FTCHAT_")}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.subprocess
def test_auto_picks_int4_where_bf16_is_not_native() -> None:
    """An AVX2-only CPU, emulated by torch's and oneDNN's own switches, gets int4; so does a
    CPU whose oneDNN alone is held below bf16. A CPU with native bf16 keeps bfloat16."""
    from ftchat.models.cpu import bf16_native

    assert resolved_dtype(AVX2_ONLY) == "int4"
    assert resolved_dtype({"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "int4"
    assert resolved_dtype({}) == ("bfloat16" if bf16_native() else "int4")


@pytest.mark.slow  # reads a third of the bundled model's 540 MB of float32 weights
@pytest.mark.model
def test_the_bundled_model_is_exactly_four_bit_groups(guide_settings) -> None:
    """Why int4 changes no weight: every block matrix of the dequantized GGUF comes back
    bit for bit from its groups' minimum and maximum (every third layer here, for time;
    all 210 matrices did when this was written), and the token embeddings from 8-bit groups."""
    from ftchat.models.loader import get_generator
    from ftchat.models.weights import SafetensorsFile

    folder = get_generator(replace(guide_settings, dtype="float32")).source
    tensors = SafetensorsFile(Path(folder) / "model.safetensors")
    matrices = [name for name in tensors if ".layers." in name and name.endswith("proj.weight")]
    assert len(matrices) == 7 * 30
    for name in [n for n in matrices if int(n.split(".")[2]) % 3 == 0]:
        weight = tensors[name]
        assert torch.equal(dequantize_groups(*quantize_groups(weight)), weight), name
    table = tensors["model.embed_tokens.weight"]
    assert torch.equal(EightBitRows(table).dequantized(), table)
