"""The direct embedding path gives sentence-transformers' vectors, and is used only where it can."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ftchat.config import DEFAULT_EMBEDDER
from ftchat.models.embedding import Embedder, _direct_pipeline, load_encoder
from ftchat.models.weights import resolve_embedder

TEXTS = [
    "What is QLoRA?",
    "LoRA freezes the pre-trained weights and learns two small low-rank matrices. " * 30,  # > 256 tokens
    "x",
    "Été, café, 日本語 and emoji 🙂",
    "",
]


@pytest.fixture(scope="module")
def bundled():
    return resolve_embedder(DEFAULT_EMBEDDER)


@pytest.mark.slow  # loads sentence-transformers as the reference
def test_direct_path_matches_sentence_transformers(bundled, embedder):
    from ftchat.models.embedding import _DirectEncoder, _SentenceTransformersEncoder

    direct = load_encoder(bundled)
    reference = load_encoder(bundled, direct=False)
    assert isinstance(direct, _DirectEncoder) and isinstance(reference, _SentenceTransformersEncoder)
    assert (direct.dimensions, direct.max_seq_length) == (reference.dimensions, reference.max_seq_length)
    ours = direct.encode(TEXTS, batch_size=2, progress=False)  # batches with padding
    theirs = reference.encode(TEXTS, batch_size=32, progress=False)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_models_with_other_modules_go_through_sentence_transformers(bundled, tmp_path):
    def variant(name: str, change) -> object:
        folder = tmp_path / name
        shutil.copytree(bundled, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        change(folder)
        return _direct_pipeline(folder)

    assert variant("plain", lambda f: None) == ("mean_tokens", 256)

    def add_dense(folder):
        modules = json.loads((folder / "modules.json").read_text())
        dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        modules.insert(2, dense)
        (folder / "modules.json").write_text(json.dumps(modules))

    def max_pooling(folder):
        config = json.loads((folder / "1_Pooling" / "config.json").read_text())
        config.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))

    def no_normalize(folder):
        modules = json.loads((folder / "modules.json").read_text())
        (folder / "modules.json").write_text(json.dumps(modules[:2]))

    def lower_case(folder):
        (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128, "do_lower_case": true}')

    for change in (add_dense, max_pooling, no_normalize, lower_case):
        assert variant(change.__name__, change) is None, change.__name__
    assert variant("garbage", lambda f: (f / "modules.json").write_text("{not json")) is None


def test_remembered_vectors_equal_fresh_ones_and_memory_is_bounded(embedder):
    small = Embedder(DEFAULT_EMBEDDER)
    small._model = embedder.load()  # the same loaded model, its own memory
    small.SENTENCE_MEMORY = 3
    texts = ["alpha beta gamma", "LoRA adapters", "alpha beta gamma", "QLoRA quantizes", "DPO"]
    np.testing.assert_allclose(small.encode_remembered(texts), embedder.encode(texts), atol=1e-6)
    assert len(small._remembered) == 3
    np.testing.assert_allclose(small.encode_remembered(["LoRA adapters"]), embedder.encode(["LoRA adapters"]),
                               atol=1e-6)
    assert small.encode_remembered([]).shape == (0, embedder.dimensions)
    assert small.encode([]).shape == (0, embedder.dimensions)


@pytest.mark.slow  # loads transformers' AutoModel as the fallback
def test_plain_bert_runs_without_transformers_and_others_fall_back(bundled, tmp_path):
    from ftchat.models.bert import BertEncoder

    direct = load_encoder(bundled)
    assert isinstance(direct.network, BertEncoder)
    # Without a tokenizer.json the same folder goes through transformers' AutoModel.
    folder = tmp_path / "no-fast-tokenizer"
    shutil.copytree(bundled, folder, ignore=shutil.ignore_patterns("tokenizer.json"))
    fallback = load_encoder(str(folder))
    assert not isinstance(fallback.network, BertEncoder)
    np.testing.assert_allclose(direct.encode(TEXTS, 2, False), fallback.encode(TEXTS, 2, False), atol=1e-5)
