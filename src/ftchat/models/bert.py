"""A BERT encoder (the bundled all-MiniLM-L6-v2 is one) in plain torch, for fast start-up.

Building the same model with transformers means importing its modeling stack first, about
1 s of a 5 s cold start here (it pulls in torch.distributed, dynamo and SciPy), for six
layers that are a few lines each. The arithmetic is transformers' BertModel's (absolute
positions, exact GELU, post-layer norms); tests compare the vectors with sentence-transformers'
to 1e-5. Anything else (other architectures, relative positions) goes through transformers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


class BertEncoder:
    @staticmethod
    def supports(config: dict) -> bool:
        return (
            config.get("model_type") == "bert"
            and config.get("hidden_act", "gelu") == "gelu"
            and config.get("position_embedding_type", "absolute") == "absolute"
        )

    def __init__(self, config: dict, tensors: Mapping[str, torch.Tensor]) -> None:
        if not self.supports(config):
            raise ValueError("not a plain BERT configuration")
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

        def get(name: str) -> torch.Tensor:
            return tensors[prefix + name].to(dtype=torch.float32, copy=True)

        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.hidden_size = int(config["hidden_size"])
        self.words = get("embeddings.word_embeddings.weight")
        self.positions = get("embeddings.position_embeddings.weight")
        self.token_types = get("embeddings.token_type_embeddings.weight")
        self.embedding_norm = (get("embeddings.LayerNorm.weight"), get("embeddings.LayerNorm.bias"))

        def pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            return get(name + ".weight"), get(name + ".bias")

        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            parts = [pair(p + f"attention.self.{n}") for n in ("query", "key", "value")]
            self.layers.append({
                "qkv": (torch.cat([w for w, _ in parts]), torch.cat([b for _, b in parts])),
                "attention_out": pair(p + "attention.output.dense"),
                "attention_norm": pair(p + "attention.output.LayerNorm"),
                "intermediate": pair(p + "intermediate.dense"),
                "output": pair(p + "output.dense"),
                "output_norm": pair(p + "output.LayerNorm"),
            })

    def _norm(self, x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(x, (self.hidden_size,), weights[0], weights[1], self.eps)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden states, [batch, tokens, hidden]."""
        batch, length = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.words[input_ids] + self.token_types[token_type_ids] + self.positions[:length]
        x = self._norm(x, self.embedding_norm)
        # Padding keys are never attended to; padded positions' own outputs are pooled away.
        keep = attention_mask.bool()[:, None, None, :]
        head_dim = self.hidden_size // self.heads
        for layer in self.layers:
            q, k, v = F.linear(x, *layer["qkv"]).view(batch, length, 3, self.heads, head_dim).unbind(2)
            attended = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep)
            attended = attended.transpose(1, 2).reshape(batch, length, self.hidden_size)
            x = self._norm(F.linear(attended, *layer["attention_out"]) + x, layer["attention_norm"])
            inner = F.gelu(F.linear(x, *layer["intermediate"]))
            x = self._norm(F.linear(inner, *layer["output"]) + x, layer["output_norm"])
        return x
