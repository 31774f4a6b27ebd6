"""ftchat's own Llama decoding loop (llama.py) against transformers, the reference.

A tiny random Llama checks the arithmetic exactly (logits, every layout option); the
bundled SmolLM2 checks that real answer prompts give the same greedy tokens as generate().
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftchat.answering import prompt
from ftchat.answering.evidence import select_evidence
from ftchat.api import Assistant
from ftchat.models.cpu import bf16_native
from ftchat.models.decoders import TransformersDecoder
from ftchat.models.generation import GenerationConfig
from ftchat.models.llama import LlamaDecoder
from ftchat.models.loader import get_generator, load_generator


def tiny_llama(tied: bool = True, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    shape = dict(
        vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        rope_theta=1000.0, tie_word_embeddings=tied,
    )
    config = LlamaConfig(**{**shape, **overrides})
    return LlamaForCausalLM(config).eval()


def reference_greedy(model, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("tied", [True, False])
def test_logits_match_transformers_exactly_in_float32(tied: bool) -> None:
    model = tiny_llama(tied)
    decoder = LlamaDecoder(model.config.to_dict(), model.state_dict(), torch.float32)
    prompt = [5, 17, 3, 99, 42, 8, 23]
    keys = torch.zeros(3, 2, 20, 16)
    values = torch.zeros_like(keys)
    with torch.inference_mode():
        expected = model(torch.tensor([prompt])).logits[0]
        got = decoder._forward(torch.tensor(prompt), 0, keys, values)
        assert torch.allclose(got, expected[-1], atol=1e-4), (got - expected[-1]).abs().max()
        # One more token through the cache equals the full forward over the longer prompt.
        expected_next = model(torch.tensor([prompt + [11]])).logits[0, -1]
        got_next = decoder._forward(torch.tensor([11]), len(prompt), keys, values)
        assert torch.allclose(got_next, expected_next, atol=1e-4)


def test_greedy_tokens_match_generate_and_stop_where_asked() -> None:
    model = tiny_llama()
    decoder = LlamaDecoder(model.config.to_dict(), model.state_dict(), torch.float32)
    prompt = [1, 2, 3, 4]
    expected = reference_greedy(model, prompt, 30)
    assert list(decoder.greedy(prompt, 30, set())) == expected
    stop = expected[5]
    assert list(decoder.greedy(prompt, 30, {stop})) == expected[: expected.index(stop)]
    tokens = decoder.greedy(prompt, 30, set())
    assert [next(tokens) for _ in range(3)] == expected[:3]
    tokens.close()  # a reader that stops: nothing more is decoded, nothing is raised


def test_unsupported_layouts_are_left_to_transformers() -> None:
    base = tiny_llama().config.to_dict()
    assert LlamaDecoder.supports(base)
    assert not LlamaDecoder.supports({**base, "attention_bias": True})
    assert not LlamaDecoder.supports({**base, "mlp_bias": True})
    assert not LlamaDecoder.supports({**base, "model_type": "qwen2"})
    assert not LlamaDecoder.supports({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}})
    with pytest.raises(ValueError):
        LlamaDecoder({**base, "attention_bias": True}, {}, torch.float32)
    with pytest.raises(ValueError, match="positions"):
        list(LlamaDecoder(base, tiny_llama().state_dict(), torch.float32).greedy(list(range(100)), 40, set()))


def test_decoder_setting(monkeypatch) -> None:
    from ftchat.config import Settings

    assert Settings().decoder == "auto"
    monkeypatch.setenv("FTCHAT_DECODER", " Transformers ")
    assert Settings().decoder == "transformers"
    with pytest.raises(ValueError, match="FTCHAT_DECODER"):
        Settings(decoder="llama.cpp")


@pytest.fixture(scope="module")
def answer_prompts(guide_settings) -> list[list[dict]]:
    assistant = Assistant(guide_settings)
    prompts = []
    for question in ["What is QLoRA and how does it save memory?", "How do I handle an imbalanced dataset?",
                     "Why use a learning rate warm-up?", "How does DPO differ from PPO?"]:
        passages = assistant.retriever.search(question)
        evidence = select_evidence(question, passages, assistant.retriever.embedder)
        prompts.append(prompt.build_messages(question, evidence))
    return prompts


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.model
def test_bundled_model_writes_the_same_answers_as_transformers(guide_settings, answer_prompts, dtype) -> None:
    if dtype == "bfloat16" and not bf16_native():
        pytest.skip("bfloat16 is not the default on this CPU")
    own = get_generator(replace(guide_settings, dtype=dtype, decoder="auto"))
    plain = load_generator(replace(guide_settings, dtype=dtype, decoder="transformers"))
    assert isinstance(own.decoder, LlamaDecoder)  # no transformers copy is kept with it
    assert isinstance(plain.decoder, TransformersDecoder) and own.stop_ids == plain.stop_ids
    assert own.weight_bytes() == plain.weight_bytes()
    for messages in answer_prompts:
        prompt = own.prompt_tokens(messages)
        if dtype == "bfloat16":
            # Read whole: with the last prompt's shared opening kept, the rest is read in a
            # second batch, whose bfloat16 products round differently from one batch's (a
            # near-tie flipped on one of these prompts); in float32 the tokens stay the same.
            own.decoder.forget_prompt()
        assert list(own.tokens(prompt, 40)) == list(plain.tokens(prompt, 40)), messages[-1]["content"]
    config = GenerationConfig(max_new_tokens=40)
    messages = answer_prompts[0]
    if dtype == "bfloat16":
        own.decoder.forget_prompt()
    assert "".join(own.stream(messages, config)) == "".join(plain.stream(messages, config))


@pytest.mark.slow  # loads the bundled model and transformers (twice each), over the guide's index
@pytest.mark.parametrize("shards", ["single", "sharded"])
@pytest.mark.model
def test_a_local_llama_folder_loads_into_the_own_decoder(guide_settings, tmp_path, shards) -> None:
    """A single safetensors file is read directly; anything else (here: shards) is loaded by
    transformers first and handed over. Both decode like generate()."""
    from transformers import AutoTokenizer

    smollm = get_generator(replace(guide_settings, dtype="float32"))
    tokenizer = AutoTokenizer.from_pretrained(smollm.source)
    model = tiny_llama(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder, max_shard_size="200KB" if shards == "sharded" else "1GB")
    tokenizer.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file() == (shards == "single")

    local = replace(guide_settings, model=str(folder), dtype="float32")
    own = load_generator(replace(local, decoder="auto"))
    plain = load_generator(replace(local, decoder="transformers"))
    assert isinstance(own.decoder, LlamaDecoder) and isinstance(plain.decoder, TransformersDecoder)
    prompt = own.prompt_tokens([{"role": "user", "content": "What is LoRA?"}])
    expected = list(plain.tokens(prompt, 12, to_the_limit=True))
    assert list(own.tokens(prompt, 12, to_the_limit=True)) == expected


@pytest.mark.slow  # transformers' tokenizer on prompts retrieved from the guide's index
@pytest.mark.model
def test_chat_tokenizer_gives_transformers_token_ids(guide_settings, answer_prompts) -> None:
    from pathlib import Path

    from transformers import AutoTokenizer

    from ftchat.models.chat_tokenizer import ChatTokenizer

    folder = Path(get_generator(replace(guide_settings, dtype="float32")).source)
    ours, theirs = ChatTokenizer(folder), AutoTokenizer.from_pretrained(folder)
    follow_up = [{"role": "user", "content": "What is LoRA?"}, {"role": "assistant", "content": "A method."},
                 {"role": "user", "content": "and QLoRA?"}]
    conversations = [*answer_prompts, [{"role": "user", "content": "Hi <|im_end|> ünïcode 🙂"}], follow_up]
    for messages in conversations:
        expected = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
        assert ours.apply_chat_template(messages) == expected
        assert ours.decode(expected) == theirs.decode(expected, skip_special_tokens=True)
    assert (ours.eos_token_id, ours.pad_token_id) == (theirs.eos_token_id, theirs.pad_token_id)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.subprocess
def test_the_default_answer_path_never_imports_transformers(guide_settings) -> None:
    """transformers' import is about 2 s of a cold start here; the bundled models do without."""
    import subprocess
    import sys

    script = (
        "import sys; from ftchat.api import Assistant\n"
        "answer = Assistant().ask('What is QLoRA and how does it save memory?')\n"
        "assert answer.answerable and answer.citations, answer.text\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'sentence_transformers'}))\n"
    )
    assert guide_settings.decoder == "auto"  # the default path
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=guide_settings.child_environment(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
