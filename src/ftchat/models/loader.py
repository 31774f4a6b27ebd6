"""Loading models, and the one cache of loaded models.

A generator is a preset (presets.py), any local model folder or hub id, or a name
registered with `register_generator` (or, for one `with` block, `registered_generator`: a
test's scripted generator, for one). Each loaded model is cached for the process under
everything that changes what is loaded (`generator_key`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ftchat.config import DEFAULT_EMBEDDER, Settings
from ftchat.models.cpu import apply_threads, resolve_dtype
from ftchat.models.hf import MODEL_LOADING
from ftchat.models.presets import PRESETS, ModelNotAvailable, ModelPreset

if TYPE_CHECKING:
    from ftchat.models.embedding import Embedder
    from ftchat.models.generation import Generator

log = logging.getLogger(__name__)


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


@contextmanager
def registered_generator(name: str, factory: GeneratorFactory) -> Iterator[str]:
    """`register_generator(name, factory)` for the `with` block, which gets the name. On exit
    the name stands for what it stood for before (an earlier factory, or nothing), and the
    models loaded under it meanwhile are gone."""
    with _CACHE_LOCK:
        previous = _FACTORIES.get(name)
    register_generator(name, factory)
    try:
        yield name
    finally:
        if previous is None:
            unregister_generator(name)
        else:
            register_generator(name, previous)


def generator_names() -> list[str]:
    """The generators to offer by name: presets and registered ones."""
    presets = [name for name, preset in PRESETS.items() if preset.kind == "generator"]
    return presets + [name for name in _FACTORIES if name not in presets]


def generator_key(settings: Settings) -> tuple[str, str, str, str, str]:
    """Everything that changes the loaded generator: model, cache folder, dtype (resolved
    for this CPU, so "auto" and what it means share one model), decoder and adapters folder."""
    return (settings.model, str(settings.cache_dir), resolve_dtype(settings.dtype), settings.decoder,
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
    from ftchat.models import decoders, weights
    from ftchat.models.chat_tokenizer import load_chat_tokenizer
    from ftchat.models.generation import Generator
    from ftchat.models.memory import release_free_memory

    name, dtype = settings.model, resolve_dtype(settings.dtype)
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
    from ftchat.models import weights
    from ftchat.models.adapters import AdapterError

    try:
        return preset.name, weights.adapted_weights(preset, settings.cache_dir, settings.adapters_dir, dtype)
    except AdapterError as exc:
        log.warning("%s; answering with the base model %s instead", exc, preset.base)
        return preset.base, weights.preset_weights(PRESETS[preset.base], settings.cache_dir, dtype)


# --- Embedders ----------------------------------------------------------------------------

_EMBEDDERS: dict[str, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()  # not _CACHE_LOCK: that one is held through a model load


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """One Embedder per name for the whole process (it loads its model on first use)."""
    from ftchat.models.embedding import Embedder

    with _EMBEDDERS_LOCK:
        if name not in _EMBEDDERS:
            _EMBEDDERS[name] = Embedder(name)
        return _EMBEDDERS[name]
