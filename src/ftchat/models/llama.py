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

from ftchat.models import quant


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

    def __init__(self, config: dict, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype,
                 int4: bool = False) -> None:
        """`tensors`: a transformers LlamaForCausalLM state dict (names as in its safetensors),
        read once per name. `int4`: the blocks' matrices in 4-bit groups (`quant.quantize_groups`),
        computed by torch's int4 kernel, with `dtype` float32 between them; ValueError where
        this torch has no such kernel or the matrices do not split into groups."""
        if not self.supports(config):
            raise ValueError("not a plain Llama configuration")
        self.shape = s = LlamaShape.from_config(config)
        self.dtype = dtype
        self.int4 = int4
        pack, self._linear = quant.linear_kernel(dtype)
        self.kernel = "onednn-packed" if self._linear is not F.linear else "torch-linear"
        head_pack, self._head = pack, self._linear
        if int4:
            if (kernel := quant.int4_kernel()) is None:
                raise ValueError("this torch build has no int4 weight-only kernel for the CPU")
            pack, self._linear = kernel
            # The output layer (the token embeddings, tied: 8-bit blocks in the GGUF) in
            # bfloat16, as the bfloat16 path has it: 4-bit groups would change its weights,
            # and torch's 8-bit kernel takes one scale per row, not per group.
            bf16_pack, bf16_apply = quant.linear_kernel(torch.bfloat16)
            head_pack = lambda w: bf16_pack(w.to(torch.bfloat16))  # noqa: E731
            self._head = lambda x, w: bf16_apply(x.to(torch.bfloat16), w).to(x.dtype)
            self.kernel = "int4-weights"

        def weight(name: str) -> torch.Tensor:
            return tensors[name].to(dtype)

        def kept(name: str) -> torch.Tensor:
            # A copy: tensors read from a memory-mapped file would otherwise keep the whole
            # mapping (every weight, ~270 MB for SmolLM2) resident next to the packed copies.
            return tensors[name].to(dtype=dtype, copy=True)

        embed = tensors["model.embed_tokens.weight"]
        head = tensors.get("lm_head.weight")
        self.vocab = embed.shape[0]
        self.lm_head = head_pack((embed if head is None else head).to(dtype))
        self.embed = quant.EightBitRows(embed) if int4 else embed.to(dtype=dtype, copy=True)
        del embed
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
        # The last prompt's tokens and key/value cache: a prompt that starts the same way (the
        # system prompt every answer shares) reads only what follows (`_cache`).
        self._last: tuple[list[int], torch.Tensor, torch.Tensor] | None = None

    @property
    def backend(self) -> str:
        return f"ftchat-llama ({self.kernel})"

    @property
    def quantization(self) -> str:
        if self.int4:
            return (f"blocks in 4-bit groups of {quant.GROUP} (the GGUF's Q4_1 blocks), output layer "
                    "bfloat16, float32 between the products")
        return f"none ({self.weights_dtype} weights)"

    @property
    def weights_dtype(self) -> str:
        """The dtype setting these weights answer to: "int4", "bfloat16" or "float32"."""
        return "int4" if self.int4 else str(self.dtype).removeprefix("torch.")

    def weight_bytes(self) -> int:
        """Bytes read per decoded token: every block's matrices, the norms and the output layer."""
        s = self.shape
        matrices = s.hidden * (s.heads + 2 * s.kv_heads) * s.head_dim + s.heads * s.head_dim * s.hidden
        matrices += 3 * s.hidden * s.intermediate
        if self.int4:  # half a byte per weight, a bfloat16 scale and offset per group
            block_bytes = matrices // 2 + matrices // quant.GROUP * 4 + 2 * s.hidden * 4
            return s.layers * block_bytes + self.vocab * s.hidden * 2 + s.hidden * 4
        weights = s.layers * (matrices + 2 * s.hidden) + self.vocab * s.hidden + s.hidden
        return weights * self.dtype.itemsize

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

    def _forward(self, ids: torch.Tensor, start: int, keys: torch.Tensor, values: torch.Tensor,
                 every_position: bool = False) -> torch.Tensor:
        """Logits of the last position (or of every one), after writing the new keys/values
        at [start, start+T)."""
        s = self.shape
        length = ids.shape[0]
        end = start + length
        cos, sin = (t[start:end] for t in self._rope(keys.shape[2]))
        q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
        mask = None
        if start and length > 1:  # a prompt after a reused prefix: causal, offset by `start`
            mask = torch.arange(end) <= torch.arange(start, end)[:, None]
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
                attn_mask=mask, is_causal=mask is None and length > 1, enable_gqa=s.kv_heads != s.heads,
            )
            x = x + self._linear(attended[0].transpose(0, 1).reshape(length, q_size), out)
            mixed = self._linear(self._norm(x, norm2), gate_up)
            x = x + self._linear(F.silu(mixed[:, : s.intermediate]) * mixed[:, s.intermediate :], down)
        logits = self._head(self._norm(x if every_position else x[-1:], self.final_norm), self.lm_head)
        return logits if every_position else logits[0]

    def _cache(self, prompt: list[int], total: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """A key/value cache for `total` positions, holding the longest prefix `prompt` shares
        with the last prompt (every answer's prompt opens with the same ~90 tokens of system
        prompt, a third of it), and that prefix's length. One token is always left to read:
        it gives the first logits."""
        keys, values = self._empty_cache(total)
        shared = 0
        if self._last is not None:
            last, last_keys, last_values = self._last
            limit = min(len(last), len(prompt) - 1)
            while shared < limit and last[shared] == prompt[shared]:
                shared += 1
            if shared:
                keys[:, :, :shared] = last_keys[:, :, :shared]
                values[:, :, :shared] = last_values[:, :, :shared]
        return keys, values, shared

    def _empty_cache(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.shape
        keys = torch.empty(s.layers, s.kv_heads, positions, s.head_dim, dtype=self.dtype)
        return keys, torch.empty_like(keys)

    def forget_prompt(self) -> None:
        """Read the next prompt whole (a benchmark's prefill must not start from the last one)."""
        self._last = None

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int]) -> Iterator[int]:
        """Yields the most likely next token until a stop token or the limit. Stop tokens are
        not yielded. Closing the iterator stops decoding at once."""
        total = len(prompt) + max_new_tokens
        if total > self.shape.max_positions:
            raise ValueError(f"prompt of {len(prompt)} tokens plus {max_new_tokens} new ones exceeds "
                             f"the model's {self.shape.max_positions} positions")
        with torch.inference_mode():
            keys, values, shared = self._cache(prompt, total)
            logits = self._forward(torch.tensor(prompt[shared:]), shared, keys, values)
            self._last = (list(prompt), keys, values)  # only once the whole prompt is read
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

    def choices(self, tokens: list[int]) -> list[int]:
        """The most likely token after each prefix of `tokens`, all read at once (teacher
        forcing: how often two decoders would pick the same next token)."""
        keys, values = self._empty_cache(len(tokens))
        with torch.inference_mode():
            logits = self._forward(torch.tensor(tokens), 0, keys, values, every_position=True)
        return logits.argmax(-1).tolist()
