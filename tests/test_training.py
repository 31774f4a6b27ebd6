"""LoRA training (training.py) and the guide preset that merges its adapter (adapters.py).

Everything is real: the bundled SmolLM2 weights, peft, transformers' Trainer. The training
rows in tests/data/training/ are hand-written test data, not the shipped adapter's data.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from ftchat.answering.answer import cited_numbers
from ftchat.answering.prompt import SYSTEM_PROMPT
from ftchat.config import Settings
from ftchat.files import sha256_file
from ftchat.models import adapters
from ftchat.models.adapters import ADAPTER_FILE, MANIFEST, PLOT_FILE, verify_adapter
from ftchat.models.generation import prompt_tokens
from ftchat.models.loader import load_generator
from ftchat.models.presets import DEFAULT_MODEL, GUIDE_MODEL, PRESETS
from ftchat.models.weights import preset_gguf
from ftchat.tools.training import (
    IGNORE,
    TrainConfig,
    answer_loss,
    base_file_record,
    base_model,
    collate,
    encode_row,
    load_rows,
    lora_model,
    train,
    write_adapter,
)

DATA = Path(__file__).resolve().parent / "data" / "training"
PROMPT = [{"role": "system", "content": SYSTEM_PROMPT},
          {"role": "user", "content": "<sources>\n[1] (LoRA) LoRA trains two small low-rank matrices.\n"
                                      "</sources>\n\nQuestion: What is LoRA?"}]


def tiny_run(tmp_path: Path, **changes) -> TrainConfig:
    """A few steps on the four hand-written rows: every step sees the same batch (all four)
    with no dropout, so the training loss is comparable from step to step."""
    config = TrainConfig(
        train_file=DATA / "targets.jsonl", val_file=DATA / "targets.val.jsonl",
        output_dir=tmp_path / "adapters" / GUIDE_MODEL, work_dir=tmp_path / "work",
        rank=4, alpha=8, dropout=0.0, learning_rate=1e-3, warmup=0.0, max_steps=4, batch_size=4, grad_accum=1,
        save_steps=2, eval_steps=2, logging_steps=1, progress_bar=False,
    )
    return replace(config, **changes)


@pytest.fixture(scope="module")
def settings() -> Settings:
    # torch's own thread count: a count set here would stay for the rest of the session.
    return Settings()


# --- The loss mask -------------------------------------------------------------------------


@pytest.mark.slow  # the bundled model's tokenizer: dequantizes the weights once per test session
@pytest.mark.model
def test_the_loss_covers_the_answer_tokens_only(settings):
    _, tokenizer, _, _ = base_model(settings, GUIDE_MODEL)
    row = load_rows(DATA / "targets.jsonl")[3]  # two sentences, two citations
    example = encode_row(tokenizer, row, tokenizer.eos_token_id)
    prompt = prompt_tokens(tokenizer, row["messages"])  # what generation feeds the model
    assert example.input_ids[: len(prompt)] == prompt
    assert example.labels[: len(prompt)] == [IGNORE] * len(prompt)
    answer = example.labels[len(prompt):]
    assert IGNORE not in answer and answer == example.input_ids[len(prompt):]
    # The labelled tokens are the target and the end-of-turn token that stops decoding,
    # exactly where the chat template puts the assistant's turn.
    assert tokenizer.decode(answer, skip_special_tokens=False) == row["target"] + "<|im_end|>"
    conversation = tokenizer.apply_chat_template(
        [*row["messages"], {"role": "assistant", "content": row["target"]}], add_generation_prompt=False)
    assert list(conversation[: len(example.input_ids)]) == example.input_ids


@pytest.mark.slow  # the bundled model's tokenizer
@pytest.mark.model
def test_a_row_that_continues_the_answers_opening_is_labelled_after_it(settings):
    _, tokenizer, _, _ = base_model(settings, GUIDE_MODEL)
    opening = "LoRA trains two small low-rank matrices. [1]"
    messages = [*PROMPT, {"role": "assistant", "content": opening}]
    prompt = prompt_tokens(tokenizer, messages)
    # The opening is part of the prompt, in the assistant's turn, unlabelled; generation
    # feeds the same ids (prompt_tokens) and the model writes on from there.
    assert prompt == prompt_tokens(tokenizer, PROMPT) + tokenizer.encode(opening, add_special_tokens=False)
    more = encode_row(tokenizer, {"messages": messages, "target": "Only they are trained. [1]"}, 2)
    assert more.labels[: len(prompt)] == [IGNORE] * len(prompt)
    labelled = tokenizer.decode(more.labels[len(prompt):], skip_special_tokens=False)
    assert labelled == " Only they are trained. [1]<|im_end|>"
    # An opening that already says it all: the model learns to stop at once.
    done = encode_row(tokenizer, {"messages": messages, "target": ""}, 2)
    assert done.input_ids == prompt + [2] and done.labels == [IGNORE] * len(prompt) + [2]


def test_a_continuing_row_may_have_an_empty_target_and_no_other_row_may(tmp_path):
    path = tmp_path / "targets.jsonl"
    ends = {"question": "What is LoRA?", "target": "",
            "messages": [*PROMPT, {"role": "assistant", "content": "LoRA trains two small matrices. [1]"}]}
    path.write_text(json.dumps(ends) + "\n", encoding="utf-8")
    assert load_rows(path)[0]["target"] == ""
    path.write_text(json.dumps({**ends, "messages": PROMPT}) + "\n", encoding="utf-8")
    with pytest.raises(Exception, match=r'targets.jsonl:1: "target" must be a non-empty string'):
        load_rows(path)


@pytest.mark.slow  # loads the bundled model
@pytest.mark.model
def test_the_answer_only_loss_is_the_models_own_loss_over_the_answer(settings):
    model, tokenizer, _, _ = base_model(settings, GUIDE_MODEL)
    rows = load_rows(DATA / "targets.jsonl")
    examples = [asdict(encode_row(tokenizer, r, tokenizer.eos_token_id)) for r in rows]
    batch = collate(examples, tokenizer.pad_token_id)
    with torch.inference_mode():
        expected = model(**batch).loss
        got = answer_loss(model, batch)
        unmasked = model(**{**batch, "labels": batch["input_ids"]}).loss
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)
    assert abs(float(unmasked) - float(expected)) > 0.1  # the mask does change the loss


def test_bad_training_rows_are_named_by_file_and_line(tmp_path):
    bad = tmp_path / "targets.jsonl"
    good = (DATA / "targets.jsonl").read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(good + "\n" + json.dumps({"question": "q?", "messages": [], "target": "t"}) + "\n")
    with pytest.raises(ValueError, match=r"targets.jsonl:2: \"messages\" must be a list"):
        load_rows(bad)


def test_ftchat_train_reports_a_bad_row_in_one_line(tmp_path):
    from click.testing import CliRunner

    from ftchat.cli import main

    bad = tmp_path / "targets.jsonl"
    bad.write_text(json.dumps({"question": "q?", "messages": [{"role": "user", "content": "x"}]}) + "\n")
    result = CliRunner().invoke(main, ["train", "--train", str(bad), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output == f'Error: {bad}:1: "target" must be a non-empty string\n'
    assert not (tmp_path / "out").exists()


# --- Training ------------------------------------------------------------------------------


@pytest.mark.slow  # loads SmolLM2 and trains 4 steps
@pytest.mark.model
def test_a_few_steps_lower_the_loss_and_write_adapter_manifest_and_plot(tmp_path, settings):
    result = train(tiny_run(tmp_path), settings)
    losses = [row["loss"] for row in result.history if "loss" in row]
    evals = [row["eval_loss"] for row in result.history if "eval_loss" in row]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.05, losses
    assert evals[-1] < evals[0], evals
    out = result.adapter_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["adapter_config.json", ADAPTER_FILE, MANIFEST, PLOT_FILE])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == verify_adapter(out)  # the recorded sha256 is the file's
    gguf = preset_gguf(PRESETS[DEFAULT_MODEL])
    assert manifest["base"]["sha256"] == sha256_file(gguf)
    assert manifest["data"]["train"]["sha256"] == sha256_file(DATA / "targets.jsonl")
    assert manifest["data"]["validation"]["rows"] == 2
    assert manifest["hyperparameters"]["rank"] == 4 and manifest["steps"] == 4
    assert manifest["train_loss"] == losses[-1] and manifest["val_loss"] == pytest.approx(evals[-1], abs=1e-4)
    assert manifest["machine"]["cores"] >= 1 and manifest["seconds"] > 0
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (result.work_dir / "progress.jsonl").read_text().count('"loss"') == 4


@pytest.mark.slow  # trains 4 steps, then 2 more from a checkpoint
@pytest.mark.model
def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, settings):
    config = tiny_run(tmp_path)
    first = train(config, settings)
    checkpoints = first.work_dir / "checkpoints"
    shutil.rmtree(checkpoints / "checkpoint-4")  # as if the run had died after step 3
    (first.adapter_dir / MANIFEST).unlink()
    again = train(config, settings)
    assert again.work_dir == first.work_dir
    assert again.manifest["resumed_from"] == "checkpoint-2" and again.manifest["steps"] == 4
    steps_logged = [json.loads(line)["step"] for line in (first.work_dir / "progress.jsonl").open()]
    assert steps_logged.count(3) == 2 and steps_logged.count(1) == 1  # steps 1-2 were not redone


# --- Loading the adapter -------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapters_dir(tmp_path_factory, settings) -> Path:
    """A LoRA adapter with random (nonzero) updates on every linear layer, written as
    training writes one: big enough to change the logits visibly."""
    model, _, base, gguf = base_model(settings, GUIDE_MODEL)
    torch.manual_seed(0)
    peft_model = lora_model(model, TrainConfig(rank=4, alpha=8, top_layers=0))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.02)
    folder = tmp_path_factory.mktemp("adapters")
    manifest = {"format": adapters.MANIFEST_FORMAT, "name": GUIDE_MODEL, "adapter_file": ADAPTER_FILE,
                "base": base_file_record(base.name, gguf), "history": []}
    write_adapter(peft_model, folder / GUIDE_MODEL, manifest)
    return folder


def copy_of(adapters_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(adapters_dir, tmp_path / "adapters")
    return tmp_path / "adapters"


def last_logits(generator, ids: list[int]) -> torch.Tensor:
    decoder = generator.decoder
    if hasattr(decoder, "model"):  # transformers' generate()
        with torch.inference_mode():
            return decoder.model(torch.tensor([ids])).logits[0, -1].float()
    s = decoder.shape
    keys = torch.zeros(s.layers, s.kv_heads, len(ids), s.head_dim, dtype=decoder.dtype)
    with torch.inference_mode():
        return decoder._forward(torch.tensor(ids), 0, keys, torch.zeros_like(keys)).float()


@pytest.mark.slow  # merges the adapter into SmolLM2 and runs both decoders
@pytest.mark.parametrize("decoder", ["auto", "transformers"])
@pytest.mark.model
def test_the_merged_adapter_gives_peft_logits_and_is_cached(adapters_dir, tmp_path, monkeypatch, decoder):
    from peft import PeftModel

    folder = copy_of(adapters_dir, tmp_path)
    settings = Settings(model=GUIDE_MODEL, adapters_dir=folder, dtype="float32", decoder=decoder)
    merged = load_generator(settings)
    assert merged.name == GUIDE_MODEL and merged.backend.startswith(
        "ftchat-llama" if decoder == "auto" else "transformers")
    ids = prompt_tokens(merged.tokenizer, PROMPT)
    base, _, _, _ = base_model(settings, GUIDE_MODEL)
    plain = last_logits(load_generator(replace(settings, model=DEFAULT_MODEL)), ids)
    unmerged = PeftModel.from_pretrained(base, str(folder / GUIDE_MODEL)).eval()
    with torch.inference_mode():
        expected = unmerged(torch.tensor([ids])).logits[0, -1]
    got = last_logits(merged, ids)
    assert (expected - plain).abs().max() > 0.5  # the adapter does change the model
    assert torch.allclose(got, expected, atol=2e-3), (got - expected).abs().max()
    # The second start loads the merged weights from the cache: nothing is merged again.
    monkeypatch.setattr(adapters, "merge_adapter", lambda *a: pytest.fail("merged again"))
    assert torch.equal(last_logits(load_generator(settings), ids), got)


@pytest.mark.slow  # loads the base model after each refusal
@pytest.mark.parametrize(("damage", "message"), [
    ("adapter", f"adapter {GUIDE_MODEL}: {ADAPTER_FILE} is damaged"),
    ("base", f"adapter {GUIDE_MODEL} was trained on another base model"),
    ("manifest", f"adapter {GUIDE_MODEL}: "),
])
@pytest.mark.model
def test_a_damaged_adapter_is_one_line_and_the_base_model_answers(adapters_dir, tmp_path, caplog, damage,
                                                                   message):
    folder = copy_of(adapters_dir, tmp_path) / GUIDE_MODEL
    if damage == "adapter":
        data = bytearray((folder / ADAPTER_FILE).read_bytes())
        data[-100] ^= 0xFF
        (folder / ADAPTER_FILE).write_bytes(bytes(data))
    elif damage == "base":
        manifest = json.loads((folder / MANIFEST).read_text())
        manifest["base"]["sha256"] = "0" * 64
        (folder / MANIFEST).write_text(json.dumps(manifest))
    else:
        (folder / MANIFEST).unlink()
    settings = Settings(model=GUIDE_MODEL, adapters_dir=folder.parent)
    with caplog.at_level(logging.WARNING, logger="ftchat"):
        generator = load_generator(settings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(message)
    assert warnings[0].endswith(f"answering with the base model {DEFAULT_MODEL} instead")
    assert generator.name == DEFAULT_MODEL
    assert len("".join(generator.stream(PROMPT)).split()) >= 3


# --- The shipped adapter -------------------------------------------------------------------


@pytest.mark.slow  # merges the shipped adapter into SmolLM2 and answers through the pipeline
@pytest.mark.model
def test_the_shipped_adapter_loads_merges_and_answers_with_citations(guide_settings):
    from ftchat.api import Assistant

    folder = Settings().adapters_dir / GUIDE_MODEL
    manifest = verify_adapter(folder)  # its file is the one its manifest describes
    assert (folder / ADAPTER_FILE).stat().st_size <= 20 * 1024 * 1024 and (folder / PLOT_FILE).is_file()
    assert manifest["base"]["sha256"] == sha256_file(preset_gguf(PRESETS[DEFAULT_MODEL]))
    assistant = Assistant(replace(guide_settings, model=GUIDE_MODEL))
    assert assistant.load_generator().name == GUIDE_MODEL and assistant.load_generator().continues_opening
    answer = assistant.ask("How does QLoRA save memory?")
    assert answer.answerable and answer.model == GUIDE_MODEL and answer.mode in {"generated", "extractive"}
    assert answer.citations and set(cited_numbers(answer.text)) == {c.n for c in answer.citations}
