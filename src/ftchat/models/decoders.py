"""The two ways ftchat decodes, behind one protocol: its own Llama loop (llama.py) and
transformers' generate() for every other model.

Llama-architecture models (the default among them) decode with llama.py, about twice as
fast as generate() here with the same tokens; int8 (dynamic quantization) exists only for
transformers models, so it always decodes with generate(), and int4 (4-bit weight groups,
torch's int4 kernel, quant.py) only in llama.py.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ftchat.models.memory import release_free_memory
from ftchat.models.weights import WEIGHTS_FILE, SafetensorsFile, torch_dtype

log = logging.getLogger(__name__)


class Decoder(Protocol):
    """Greedy next tokens of one loaded model."""

    @property
    def backend(self) -> str: ...

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int]) -> Iterator[int]:
        """Token ids after the prompt until a stop id (excluded) or the limit; closing it stops."""
        ...

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token."""
        ...


def token_ids(*values: int | list[int] | None) -> set[int]:
    """End-of-sequence settings as one set: each may be an id, a list of ids, or unset."""
    ids: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


def stop_ids_of(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the generation config's end-of-sequence ids (a chat
    model's end-of-turn token among them) and the tokenizer's own."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return token_ids(configured, getattr(tokenizer, "eos_token_id", None))


class TransformersDecoder:
    """A transformers model decoded with generate(), streamed through a queue."""

    backend = "transformers-generate"

    def __init__(self, model, pad_token_id: int | None) -> None:
        self.model = model
        self.pad_token_id = pad_token_id

    def weight_bytes(self) -> int:
        """Every layer's weights once, plus one row of the embedding table (tied output
        matrices are counted once, as the output layer)."""
        import torch

        seen: set[int] = set()
        total = 0
        for module in self.model.modules():
            if isinstance(module, torch.nn.Embedding):
                continue
            if type(module).__name__ == "LinearPackedParams":  # a dynamically quantized linear
                weight, bias = module._weight_bias()
                total += weight.numel() * weight.element_size()
                total += 0 if bias is None else bias.numel() * bias.element_size()
                continue
            for tensor in module.parameters(recurse=False):
                if tensor.data_ptr() not in seen:
                    seen.add(tensor.data_ptr())
                    total += tensor.numel() * tensor.element_size()
        return total

    def greedy(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int]) -> Iterator[int]:
        # Set when the caller stops reading (an answer already judged, a closed tab): the
        # model must stop too rather than decode the remaining tokens for nobody.
        abandoned = threading.Event()
        produced: queue.Queue = queue.Queue()
        finished = object()
        # No stop ids: a benchmark wants exactly max_new_tokens, so generate() must not stop
        # at its own end-of-sequence token either.
        to_the_limit = not stop_ids
        thread = threading.Thread(
            target=self._run, args=(prompt, max_new_tokens, to_the_limit, abandoned, produced, finished),
            daemon=True)
        thread.start()
        try:
            while (item := produced.get()) is not finished:
                if isinstance(item, BaseException):
                    raise item
                if item in stop_ids:
                    return
                yield item
        finally:
            abandoned.set()
            thread.join()

    def _run(self, prompt: list[int], max_new_tokens: int, to_the_limit: bool,
             abandoned: threading.Event, produced: queue.Queue, finished: object) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        class Abandoned(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                return abandoned.is_set()

        class Tokens(BaseStreamer):
            prompt_seen = False

            def put(self, value) -> None:
                if not self.prompt_seen:  # generate() hands over the prompt first
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    produced.put(token)

            def end(self) -> None:
                produced.put(finished)

        ids = torch.tensor([prompt])
        try:
            with torch.inference_mode():
                self.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                    min_new_tokens=max_new_tokens if to_the_limit else None, do_sample=False,
                    streamer=Tokens(), stopping_criteria=StoppingCriteriaList([Abandoned()]),
                    pad_token_id=self.pad_token_id,
                )
        except BaseException as exc:  # surfaced in the caller's thread by greedy()
            produced.put(exc)
            produced.put(finished)


def quantize_int8(model):
    """int8 weights (one scale per output channel) for the transformer blocks' linear layers.

    The output layer stays in float: it shares its matrix with the token embeddings, and
    quantizing that one matrix turned answers into gibberish ("Luminam Luminam").
    """
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    blocks = getattr(model, "model", None)
    if blocks is None or not isinstance(blocks, torch.nn.Module):
        return model  # an unfamiliar layout: stay in float rather than guess
    with warnings.catch_warnings():  # torch points at torchao; the eager API still works
        warnings.simplefilter("ignore")
        quantize_dynamic(blocks, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return model


def llama_from_folder(folder: Path, dtype: str):
    """A LlamaDecoder and its config read straight from a folder's single safetensors file,
    without building the transformers model first (that would hold every weight twice);
    None where the folder is not that."""
    from ftchat.models.llama import LlamaDecoder

    weights = folder / WEIGHTS_FILE
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not weights.is_file() or not LlamaDecoder.supports(config):
        return None
    try:
        tensors = SafetensorsFile(weights)
        if not tensors.readable():
            return None
    except (OSError, ValueError, KeyError):
        return None
    decoder = build_llama(config, tensors, dtype)
    release_free_memory()  # the per-layer reads and fused copies, freed but still held by malloc
    return decoder, config


def folder_stop_ids(folder: Path, config: dict, tokenizer) -> set[int]:
    """A model folder's end-of-sequence ids, as generate() would read them."""
    try:
        generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        generation = {}
    return token_ids(generation.get("eos_token_id"), config.get("eos_token_id"), tokenizer.eos_token_id)


def llama_from_model(model, dtype: str):
    """A LlamaDecoder built from a loaded transformers model, or None for other architectures.
    The caller lets the transformers copy go."""
    from ftchat.models.llama import LlamaDecoder

    config = model.config.to_dict()
    if not LlamaDecoder.supports(config):
        return None
    return build_llama(config, model.state_dict(), dtype)


def build_llama(config: dict, tensors, dtype: str):
    """A LlamaDecoder in `dtype`; for int4 where it does not apply (no int4 kernel, weights
    that are not 4-bit groups already, such as a merged adapter's), one warning and float32."""
    from ftchat.models.llama import LlamaDecoder

    if dtype == "int4":
        try:
            return LlamaDecoder(config, tensors, torch_dtype("float32"), int4=True)
        except ValueError as exc:
            log.warning("int4 does not apply to these weights (%s); decoding in float32", exc)
    return LlamaDecoder(config, tensors, torch_dtype(dtype))
