"""Greedy decoding for Llama-architecture models (the default SmolLM2 is one), in plain torch.

Why not transformers' `generate`: on this class of machine a 135M model spends most of a
decoding step outside arithmetic. Profiling a step in bfloat16 showed ~45 ms per token, of
which the matrix-vector products took 28 ms at about a third of the memory bandwidth, and
the rest went to many small operations (cache concatenation, masks, logits processors).
Here q/k/v and gate/up are fused into one matrix each, weights are repacked once into
oneDNN's blocked layout (its matrix-vector kernel reads them about twice as fast), and the
key/value cache is preallocated. The arithmetic is the same as transformers' Llama, so the
greedy tokens are the same (tests compare the two on answer prompts).

Models of any other architecture, or Llama variants this file does not handle (biases,
rope scaling), run through transformers as before: see `LlamaDecoder.supports`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    rms_eps: float
    rope_theta: float
    max_positions: int

    @classmethod
    def from_config(cls, config: dict) -> LlamaShape:
        heads = config["num_attention_heads"]
        rope = config.get("rope_parameters") or {}
        return cls(
            layers=config["num_hidden_layers"],
            hidden=config["hidden_size"],
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            intermediate=config["intermediate_size"],
            rms_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            max_positions=int(config.get("max_position_embeddings", 2048)),
        )


def _linear_kernel(dtype: torch.dtype):
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


class LlamaDecoder:
    """The weights of one Llama model, laid out for fast single-sequence greedy decoding."""

    @staticmethod
    def supports(config: dict) -> bool:
        rope = config.get("rope_parameters") or {}
        return (
            config.get("model_type") == "llama"
            and config.get("hidden_act", "silu") == "silu"
            and not config.get("attention_bias", False)
            and not config.get("mlp_bias", False)
            and rope.get("rope_type", "default") == "default"
            and not config.get("rope_scaling")
            and config.get("pretraining_tp", 1) == 1
        )

    def __init__(self, config: dict, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
        """`tensors`: a transformers LlamaForCausalLM state dict (names as in its safetensors),
        read once per name."""
        if not self.supports(config):
            raise ValueError("not a plain Llama configuration")
        self.shape = s = LlamaShape.from_config(config)
        self.dtype = dtype
        pack, self._linear = _linear_kernel(dtype)
        self.kernel = "onednn-packed" if self._linear is not F.linear else "torch-linear"

        def weight(name: str) -> torch.Tensor:
            return tensors[name].to(dtype)

        def kept(name: str) -> torch.Tensor:
            # A copy: tensors read from a memory-mapped file would otherwise keep the whole
            # mapping (every weight, ~270 MB for SmolLM2) resident next to the packed copies.
            return tensors[name].to(dtype=dtype, copy=True)

        self.embed = kept("model.embed_tokens.weight")
        head = tensors.get("lm_head.weight")
        self.lm_head = pack(self.embed if head is None else head.to(dtype))
        self.final_norm = kept("model.norm.weight")
        self.blocks = []
        for i in range(s.layers):
            p = f"model.layers.{i}."
            qkv = torch.cat([weight(p + f"self_attn.{n}_proj.weight") for n in ("q", "k", "v")])
            gate_up = torch.cat([weight(p + "mlp.gate_proj.weight"), weight(p + "mlp.up_proj.weight")])
            self.blocks.append((
                kept(p + "input_layernorm.weight"), pack(qkv), pack(weight(p + "self_attn.o_proj.weight")),
                kept(p + "post_attention_layernorm.weight"), pack(gate_up),
                pack(weight(p + "mlp.down_proj.weight")),
            ))
        self._rope_length = 0
        self._cos = self._sin = torch.empty(0)

    @property
    def backend(self) -> str:
        return f"ftchat-llama ({self.kernel})"

    def weight_bytes(self) -> int:
        """Bytes read per decoded token: every block's matrices, the norms and the output layer."""
        s = self.shape
        per_block = (s.hidden * (s.heads + 2 * s.kv_heads) * s.head_dim + s.heads * s.head_dim * s.hidden
                     + 3 * s.hidden * s.intermediate + 2 * s.hidden)
        vocab = self.embed.shape[0]
        return (s.layers * per_block + vocab * s.hidden + s.hidden) * self.embed.element_size()

    def _rope(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The same arithmetic as transformers' default rotary embedding (float32, then cast).
        if length > self._rope_length:
            s = self.shape
            exponents = torch.arange(0, s.head_dim, 2, dtype=torch.int64).float() / s.head_dim
            inv = 1.0 / (s.rope_theta**exponents)
            angles = torch.outer(torch.arange(length).float(), inv)
            angles = torch.cat([angles, angles], dim=-1)
            self._cos, self._sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
            self._rope_length = length
        return self._cos, self._sin

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.shape.rms_eps)
        return weight * xf.to(self.dtype)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    def _forward(self, ids: torch.Tensor, start: int, keys: torch.Tensor,
                 values: torch.Tensor) -> torch.Tensor:
        """Logits of the last position, after writing the new keys/values at [start, start+T)."""
        s = self.shape
        length = ids.shape[0]
        end = start + length
        cos, sin = (t[start:end] for t in self._rope(keys.shape[2]))
        q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
        x = self.embed[ids]
        for i, (norm1, qkv, out, norm2, gate_up, down) in enumerate(self.blocks):
            mixed = self._linear(self._norm(x, norm1), qkv)
            q = mixed[:, :q_size].view(length, s.heads, s.head_dim).transpose(0, 1)
            k = mixed[:, q_size:q_size + kv_size].view(length, s.kv_heads, s.head_dim).transpose(0, 1)
            v = mixed[:, q_size + kv_size:].view(length, s.kv_heads, s.head_dim).transpose(0, 1)
            keys[i, :, start:end] = self._rotate(k, cos, sin)
            values[i, :, start:end] = v
            attended = F.scaled_dot_product_attention(
                self._rotate(q, cos, sin).unsqueeze(0), keys[i : i + 1, :, :end], values[i : i + 1, :, :end],
                is_causal=length > 1, enable_gqa=s.kv_heads != s.heads,
            )
            x = x + self._linear(attended[0].transpose(0, 1).reshape(length, q_size), out)
            mixed = self._linear(self._norm(x, norm2), gate_up)
            x = x + self._linear(F.silu(mixed[:, : s.intermediate]) * mixed[:, s.intermediate :], down)
        return self._linear(self._norm(x[-1:], self.final_norm), self.lm_head)[0]

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int]) -> Iterator[int]:
        """Yields the most likely next token until a stop token or the limit. Stop tokens are
        not yielded. Closing the iterator stops decoding at once."""
        s = self.shape
        total = len(prompt) + max_new_tokens
        if total > s.max_positions:
            raise ValueError(f"prompt of {len(prompt)} tokens plus {max_new_tokens} new ones exceeds "
                             f"the model's {s.max_positions} positions")
        keys = torch.empty(s.layers, s.kv_heads, total, s.head_dim, dtype=self.dtype)
        values = torch.empty_like(keys)
        with torch.inference_mode():
            logits = self._forward(torch.tensor(prompt), 0, keys, values)
            position = len(prompt)
            for _ in range(max_new_tokens):
                token = int(logits.argmax())
                if token in stop_ids:
                    return
                yield token
                if position + 1 >= total:
                    return
                logits = self._forward(torch.tensor([token]), position, keys, values)
                position += 1
