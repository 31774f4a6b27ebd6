"""Each speed path gives answers as good as the plain float32 one (no timings asserted here).

bfloat16 is the default where the CPU runs it natively; int8 (dynamic quantization of the
transformer blocks' linear layers) is an option. For a few typical
questions each must produce a verified, cited answer, like the float32 model does.
"""

from __future__ import annotations

import pytest

from ftchat.answering import answer as ans
from ftchat.answering import verify
from ftchat.api import Assistant
from ftchat.config import DTYPES
from ftchat.models.cpu import bf16_native, int8_supported, resolve_dtype
from ftchat.models.decoders import TransformersDecoder
from ftchat.models.generation import Generator
from ftchat.models.loader import get_generator
from ftchat.text import split_sentences

QUESTIONS = ["What is LoRA?", "What does gradient accumulation do?", "How does QLoRA save memory?"]


def test_resolve_dtype_defaults_and_overrides(monkeypatch):
    from ftchat.config import Settings

    # int8 is opt-in (it hurt answers); bfloat16 only where the CPU runs it natively.
    assert resolve_dtype("auto") == ("bfloat16" if bf16_native() else "float32")
    assert resolve_dtype(Settings().dtype) == resolve_dtype("auto")
    monkeypatch.setenv("FTCHAT_DTYPE", "int8")
    assert resolve_dtype(Settings().dtype) == "int8"
    assert resolve_dtype("bf16") == "bfloat16"
    assert resolve_dtype("fp32") == "float32"
    monkeypatch.setenv("FTCHAT_DTYPE", "FP32")
    assert Settings().dtype == "float32"
    with pytest.raises(ValueError):
        resolve_dtype("float8")


def test_settings_carry_dtype_and_threads(monkeypatch):
    from ftchat.config import Settings

    monkeypatch.setenv("FTCHAT_DTYPE", "bfloat16")
    monkeypatch.setenv("FTCHAT_THREADS", "1")
    s = Settings()
    assert (s.dtype, s.threads) == ("bfloat16", 1)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "int8" or int8_supported()])
@pytest.mark.model
def test_each_dtype_gives_verified_cited_answers(guide_settings, dtype):
    from dataclasses import replace

    assistant = Assistant(replace(guide_settings, dtype=dtype))
    generator = assistant.load_generator()
    assert isinstance(generator, Generator) and generator.dtype == dtype
    assert assistant.generator_loaded()
    embedder = assistant.retriever.embedder
    for question in QUESTIONS:
        answer = assistant.ask(question)
        assert answer.answerable and answer.mode in {"generated", "extractive"}, answer.text
        numbers = set(ans.cited_numbers(answer.text))
        assert numbers and numbers <= {c.n for c in answer.citations}, answer.text
        evidence = answer.cited_evidence(embedder)
        for sentence in split_sentences(answer.text):
            assert verify.verify_sentence(sentence, evidence, embedder).supported, sentence


@pytest.mark.slow
@pytest.mark.model
def test_int8_keeps_the_output_layer_in_float_and_reads_fewer_bytes(guide_settings):
    if not int8_supported():
        pytest.skip("no int8 kernels on this CPU")
    from dataclasses import replace

    import torch

    fast = get_generator(replace(guide_settings, dtype="int8"))
    plain = get_generator(replace(guide_settings, dtype="float32"))
    assert isinstance(fast.decoder, TransformersDecoder)  # int8 exists only for transformers models
    assert isinstance(fast.decoder.model.lm_head, torch.nn.Linear)  # quantizing it gave gibberish
    assert fast.weight_bytes() < plain.weight_bytes() / 2
    messages = [{"role": "user", "content": "Say hello."}]
    assert "".join(fast.stream(messages)).strip()


RACE = """
import threading
from ftchat.config import DEFAULT_EMBEDDER, Settings
from dataclasses import replace

from ftchat.models.embedding import Embedder
from ftchat.models.generation import GenerationConfig
from ftchat.models.loader import load_generator

settings = replace(Settings(), dtype="bfloat16")
messages = [{"role": "user", "content": "Say hello."}]
for round in range(4):  # the first round races imports, every round the dtype switch
    errors, out, start = [], {}, threading.Barrier(2)

    def embed():
        start.wait()
        try:
            out["vectors"] = Embedder(DEFAULT_EMBEDDER).encode(["What is LoRA?"])
        except Exception as exc:
            errors.append(exc)

    def generate():
        start.wait()
        try:
            out["generator"] = load_generator(settings)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=embed), threading.Thread(target=generate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    print(round, "".join(out["generator"].stream(messages, GenerationConfig(max_new_tokens=4))))
"""


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
@pytest.mark.model
@pytest.mark.subprocess
def test_embedder_and_generator_loading_at_once_in_a_fresh_process(guide_settings, attempt):
    """The page's warm-up and a first question load both models in two threads at once.

    Without a common load lock this failed every attempt here (an import error, or a model
    with mixed dtypes that failed every answer); each attempt is a new process because only
    the first loads race the imports.
    """
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True,
                            env=guide_settings.child_environment(), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip()
