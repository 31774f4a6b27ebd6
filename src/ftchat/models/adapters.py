"""LoRA adapters shipped with ftchat: where they live, what their manifest promises, and the
checks and merge that turn one into plain weights.

An adapter folder (written by training.py, atomically) holds peft's `adapter_config.json`
and `adapter_model.safetensors`, a `manifest.json` and a `loss.png`. The manifest records
the sha256 of the adapter file and of the base model's GGUF file it was trained on; both
are checked before an adapter is merged, because a damaged adapter merged into the weights
would silently change every answer.

manifest.json (format 1):
    {"format": 1, "name", "adapter_file", "adapter_sha256", "adapter_bytes",
     "base": {"preset", "file", "sha256", "bytes"},
     "data": {"train": {"file", "sha256", "rows", "used"}, "validation": {...}},
     "hyperparameters": {...}, "train_loss", "val_loss", "steps", "seconds",
     "started", "finished", "machine": {...}, "history": [{"step", "loss"|"eval_loss"}]}
"""

from __future__ import annotations

import json
from pathlib import Path

from ftchat.files import sha256_file

MANIFEST = "manifest.json"
ADAPTER_FILE = "adapter_model.safetensors"
PLOT_FILE = "loss.png"
MANIFEST_FORMAT = 1


class AdapterError(Exception):
    """An adapter that must not be merged: missing, damaged, or trained on other weights.
    The message is one line that says which and what to do."""


def read_manifest(folder: Path) -> dict:
    """The folder's manifest, or AdapterError when it is missing or unreadable."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"adapter {folder.name}: {path} is missing (run `make train`)") from None
    except (OSError, ValueError) as exc:
        raise AdapterError(f"adapter {folder.name}: {path} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise AdapterError(f"adapter {folder.name}: {path} is not a format-{MANIFEST_FORMAT} manifest")
    return manifest


def verify_adapter(folder: Path) -> dict:
    """The manifest of an adapter whose file matches the sha256 recorded for it."""
    manifest = read_manifest(folder)
    weights = folder / manifest.get("adapter_file", ADAPTER_FILE)
    if not weights.is_file():
        raise AdapterError(f"adapter {folder.name}: {weights} is missing (reinstall, or run `make train`)")
    actual = sha256_file(weights)
    if actual != manifest.get("adapter_sha256"):
        raise AdapterError(
            f"adapter {folder.name}: {weights.name} is damaged (sha256 {actual[:12]}…, its manifest "
            f"says {str(manifest.get('adapter_sha256'))[:12]}…); restore the file or run `make train`")
    return manifest


def verify_base(folder: Path, manifest: dict, base_file: Path) -> None:
    """AdapterError unless `base_file` is the model file the adapter was trained on."""
    expected = (manifest.get("base") or {}).get("sha256")
    actual = sha256_file(base_file)
    if actual != expected:
        raise AdapterError(
            f"adapter {folder.name} was trained on another base model (sha256 {str(expected)[:12]}…, "
            f"installed {base_file.name} is {actual[:12]}…); retrain it with `make train`")


def merge_adapter(model, folder: Path):
    """`model` with the adapter's low-rank updates added into its weights (peft's
    merge_and_unload): plain transformers weights that either decoder runs at base speed."""
    import warnings

    from peft import PeftModel

    try:
        with warnings.catch_warnings():  # peft reads an attribute transformers 5 renamed
            warnings.simplefilter("ignore", FutureWarning)
            adapted = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise AdapterError(f"adapter {folder.name} does not fit the base model ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return adapted.merge_and_unload()
