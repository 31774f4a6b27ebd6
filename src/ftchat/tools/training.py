"""LoRA fine-tuning of the bundled SmolLM2 on answers written for the pipeline's own prompts.

Training rows (`train/targets.jsonl`, and the validation split `train/targets.val.jsonl`
beside it), one JSON object a line:

    {"question": "...",
     "messages": [{"role": "system", "content": ...}, {"role": "user", "content": ...}],
     "target": "The answer the model should write, each sentence ending with its [n]."}

`messages` are exactly what `answer.build_messages` builds for the question's selected
evidence, so the model learns on the prompt it will see; other fields (section, style,
nuggets) are carried along and ignored here. Each row is tokenized as generation does: the
chat template with the generation prompt (generation.prompt_tokens), then the target's tokens
and the end-of-turn token that stops decoding. The loss covers those answer tokens only.

A run lives in a work folder named by a hash of its data, base model and settings, holding
checkpoints every `save_steps` (so running the same command again resumes) and
`progress.jsonl`. At the end the adapter folder (adapters.py) is replaced in one rename,
so a crash leaves the previous adapter usable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from transformers import Trainer, TrainerCallback

from ftchat.config import REPO_ROOT, Settings
from ftchat.files import read_objects, sha256_file, staged_folder
from ftchat.models.adapters import ADAPTER_FILE, MANIFEST, MANIFEST_FORMAT, PLOT_FILE

log = logging.getLogger(__name__)

TRAIN_DIR = REPO_ROOT / "train"
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE = -100  # the label transformers' loss skips


class TrainingError(ValueError):
    """Training rows or settings that cannot be used; the message names the file and line,
    or the setting, and the problem."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults: LoRA r=16 (alpha 32) on every linear layer of every block."""

    train_file: Path = TRAIN_DIR / "targets.jsonl"
    val_file: Path = TRAIN_DIR / "targets.val.jsonl"
    preset: str = "smollm2-135m-guide"  # the preset whose adapter this run writes
    output_dir: Path | None = None  # default: the settings' adapters folder / the preset's adapter
    work_dir: Path | None = None  # checkpoints and progress; default: the cache's training/
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_LINEAR
    # Chosen on the validation split (docs/training.md): 40-step runs gave validation loss
    # 0.625 at 2e-4 and 0.462 at 1e-3 on the top 10 blocks; every block trained at 2.4x the
    # cost per step for a slightly lower training loss, so the top third it is.
    top_layers: int = 10  # LoRA only on the last N blocks (layer-wise fine-tuning); 0: all
    learning_rate: float = 1e-3
    epochs: float = 2.0
    max_steps: int = -1  # stop after this many steps (a measurement, a test); -1: the epochs
    # 8 examples per optimizer step, 4 at a time: activations, not weights, fill memory
    # (6.8 GB peak for 8 x 256 tokens in bfloat16 with LoRA on every block, docs/training.md).
    batch_size: int = 4
    grad_accum: int = 2
    max_tokens: int = 768  # longer rows (prompt + answer) are left out, and counted
    warmup: float = 0.05  # share of the steps with a rising learning rate
    seed: int = 0
    save_steps: int = 25
    eval_steps: int = 50  # a validation pass costs about as much as 10 training steps
    logging_steps: int = 5
    dtype: str = "auto"  # "bfloat16" (autocast) where the CPU runs it natively, else float32
    threads: int = 0  # 0: the settings' (FTCHAT_THREADS)
    progress_bar: bool = True

    def with_overrides(self, **changes: object) -> TrainConfig:
        """This config with the options a caller gave (None: keep the default)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def hyperparameters(self) -> dict:
        keys = ("rank", "alpha", "dropout", "target_modules", "top_layers", "learning_rate", "epochs",
                "max_steps", "batch_size", "grad_accum", "max_tokens", "warmup", "seed")
        values = asdict(self)
        return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in keys}


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on the prompt, the token ids on the answer


@dataclass
class RunResult:
    adapter_dir: Path
    manifest: dict
    work_dir: Path
    history: list[dict] = field(default_factory=list)


# --- Data ----------------------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """The rows of a training file, each checked; TrainingError names the first bad one."""
    rows = []
    for where, row in read_objects(path, TrainingError, "training rows: see docs/training.md"):
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise TrainingError(f'{where}: "question" must be a non-empty string')
        messages = row.get("messages")
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                           and isinstance(m.get("content"), str) for m in messages)):
            raise TrainingError(f'{where}: "messages" must be a list of {{"role", "content"}} strings')
        if messages[-1]["role"] not in ("user", "assistant"):
            raise TrainingError(f'{where}: "messages" must end with the user turn or the answer\'s start')
        # After an answer's start the answer may be complete already: then the target is "".
        continues = messages[-1]["role"] == "assistant"
        if not isinstance(row.get("target"), str) or not (continues or row["target"].strip()):
            raise TrainingError(f'{where}: "target" must be a non-empty string')
        rows.append(row)
    if not rows:
        raise TrainingError(f"{path} has no rows")
    return rows


def encode_row(tokenizer, row: dict, end_id: int) -> Example:
    """Prompt tokens exactly as generation builds them, then the answer and the end-of-turn
    token; only the answer and that token carry a label."""
    from ftchat.models.generation import prompt_tokens

    prompt = prompt_tokens(tokenizer, row["messages"])
    target = row["target"].strip()
    if target and row["messages"][-1]["role"] == "assistant":
        target = " " + target  # it continues the answer's start, as the model will write it
    answer = list(tokenizer.encode(target, add_special_tokens=False)) + [end_id]
    return Example(prompt + answer, [IGNORE] * len(prompt) + answer)


def encode_rows(tokenizer, rows: list[dict], end_id: int, max_tokens: int) -> tuple[list[Example], int]:
    """(examples, rows left out for being longer than max_tokens)."""
    examples = [encode_row(tokenizer, row, end_id) for row in rows]
    kept = [e for e in examples if len(e.input_ids) <= max_tokens]
    return kept, len(examples) - len(kept)


def collate(examples: list[dict], pad_id: int) -> dict:
    """A right-padded batch; padding is masked out of attention and loss."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids, labels, mask = [], [], []
    for e in examples:
        gap = width - len(e["input_ids"])
        ids.append(e["input_ids"] + [pad_id] * gap)
        labels.append(e["labels"] + [IGNORE] * gap)
        mask.append([1] * len(e["input_ids"]) + [0] * gap)
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask)}


def answer_loss(model, batch: dict, num_items: int | None = None):
    """The causal LM loss over the labelled (answer) tokens, with the output layer applied
    at those positions only: the prompt is most of each row and needs no logits, and full
    logits cost 8 x 256 x 49,152 floats (400 MB) per copy, several copies per step.
    The same value as the model's own loss (tests compare them); `num_items` is the number
    of labelled tokens to divide by (Trainer's count over an accumulated batch)."""
    import torch.nn.functional as F

    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    targets = batch["labels"][:, 1:]  # position t predicts token t + 1
    keep = targets != IGNORE
    logits = causal_lm.lm_head(hidden[:, :-1][keep]).float()
    total = F.cross_entropy(logits, targets[keep], reduction="sum")
    return total / (num_items if num_items is not None else keep.sum())


class AnswerLossTrainer(Trainer):
    """transformers' Trainer with `answer_loss`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_is_scaled_for_ga = True  # answer_loss divides by the accumulated batch's count

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        with self.accelerator.autocast():  # a submodule's call misses the autocast on forward()
            loss = answer_loss(model, inputs, num_items_in_batch)
        return (loss, {"loss": loss}) if return_outputs else loss


# --- Model ---------------------------------------------------------------------------------


def lora_model(model, config: TrainConfig):
    """The base model wrapped with trainable LoRA matrices (the base weights stay frozen)."""
    from peft import LoraConfig, get_peft_model

    layers = model.config.num_hidden_layers
    top = config.top_layers
    if top < 0 or top > layers:
        raise TrainingError(f"top_layers must be between 0 and {layers}, got {top}")
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
        target_modules=list(config.target_modules), task_type="CAUSAL_LM", bias="none",
        layers_to_transform=list(range(layers - top, layers)) if top else None,
    )
    with warnings.catch_warnings():  # peft reads an attribute transformers 5 renamed
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, lora)


def base_model(settings: Settings, preset_name: str):
    """(transformers model in float32, chat tokenizer, base preset, GGUF file) to train on."""
    from transformers import AutoModelForCausalLM

    from ftchat.models.chat_tokenizer import load_chat_tokenizer
    from ftchat.models.hf import quiet_transformers
    from ftchat.models.presets import PRESETS
    from ftchat.models.weights import preset_gguf, preset_weights

    preset = PRESETS.get(preset_name)
    if preset is None or not preset.adapter:
        raise TrainingError(f"preset {preset_name} has no adapter to train")
    base = PRESETS[preset.base]
    folder = preset_weights(base, settings.cache_dir, "float32")
    if not isinstance(folder, Path):
        raise OSError(f"training needs the dequantized weight cache in {settings.cache_dir}, "
                      "which could not be written")
    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", local_files_only=True)
    return model, load_chat_tokenizer(folder), base, preset_gguf(base)


# --- The run -------------------------------------------------------------------------------


def train(config: TrainConfig, settings: Settings | None = None) -> RunResult:
    """Train the adapter `config` describes, resuming its latest checkpoint if one exists,
    and replace the adapter folder with the result (adapter, manifest, loss plot)."""
    from transformers import set_seed

    from ftchat.models.cpu import apply_threads
    from ftchat.models.presets import PRESETS

    settings = settings or Settings()
    bf16 = _use_bf16(config.dtype)
    apply_threads(config.threads or settings.threads)
    train_rows, val_rows = load_rows(config.train_file), _optional_rows(config.val_file)
    model, tokenizer, base, gguf = base_model(settings, config.preset)
    end_id = tokenizer.eos_token_id
    train_set, too_long = encode_rows(tokenizer, train_rows, end_id, config.max_tokens)
    val_set, val_too_long = encode_rows(tokenizer, val_rows, end_id, config.max_tokens)
    if not train_set:
        raise TrainingError(f"every row of {config.train_file} is longer than {config.max_tokens} tokens")
    data = {"train": _data_record(config.train_file, train_rows, train_set),
            "validation": _data_record(config.val_file, val_rows, val_set)}
    base_record = base_file_record(base.name, gguf)
    work_dir = _work_dir(config, settings, data, base_record)
    log.info("Training %s: %d examples (%d too long left out), %d validation (%d left out); work folder %s",
             config.preset, len(train_set), too_long, len(val_set), val_too_long, work_dir)
    set_seed(config.seed)  # before the LoRA matrices are initialised, not only in the Trainer
    model = lora_model(model, config)
    trainer = _trainer(model, tokenizer, train_set, val_set, config, work_dir, bf16)
    resume = _last_checkpoint(work_dir)
    started, clock = datetime.now(UTC), time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=resume)
    final_eval = trainer.evaluate() if val_set else {}
    history = _history(trainer.state.log_history)
    manifest = {
        "format": MANIFEST_FORMAT, "name": PRESETS[config.preset].adapter, "adapter_file": ADAPTER_FILE,
        "base": base_record, "data": data, "hyperparameters": config.hyperparameters(),
        # The last logged loss (a run shorter than logging_steps logs none: its mean then).
        "train_loss": _last(history, "loss") or round(outcome.training_loss, 4),
        "train_loss_mean": round(outcome.training_loss, 4), "val_loss": final_eval.get("eval_loss"),
        "steps": trainer.state.global_step, "resumed_from": resume and Path(resume).name,
        "seconds": round(time.perf_counter() - clock, 1), "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(bf16), "history": history,
    }
    out = config.output_dir or settings.adapters_dir / PRESETS[config.preset].adapter
    manifest = write_adapter(model, out, manifest)
    return RunResult(out, manifest, work_dir, history)


def base_file_record(preset_name: str, gguf: Path) -> dict:
    """The manifest's "base": the model file an adapter was trained on."""
    return {"preset": preset_name, "file": gguf.name, "sha256": sha256_file(gguf),
            "bytes": gguf.stat().st_size}


def _use_bf16(dtype: str) -> bool:
    from ftchat.models.cpu import resolve_dtype

    resolved = resolve_dtype(dtype)
    if resolved not in {"float32", "bfloat16"}:
        raise TrainingError(f"training runs in float32 or bfloat16, not {resolved}")
    return resolved == "bfloat16"


def _optional_rows(path: Path) -> list[dict]:
    """The validation rows; none where the file does not exist (then no evaluation loss)."""
    if not path.is_file():
        log.warning("No validation file %s: training without an evaluation loss", path)
        return []
    return load_rows(path)


def _data_record(path: Path, rows: list[dict], used: list[Example]) -> dict:
    if not rows:
        return {"file": _shown(path), "sha256": None, "rows": 0, "used": 0, "tokens": 0}
    return {"file": _shown(path), "sha256": sha256_file(path), "rows": len(rows), "used": len(used),
            "tokens": sum(len(e.input_ids) for e in used),
            "answer_tokens": sum(1 for e in used for t in e.labels if t != IGNORE)}


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _work_dir(config: TrainConfig, settings: Settings, data: dict, base: dict) -> Path:
    """A folder per (data, base, hyperparameters): the same command resumes its own run,
    and a changed one never resumes another's checkpoints."""
    key = json.dumps({"data": {k: v["sha256"] for k, v in data.items()}, "base": base["sha256"],
                      "preset": config.preset, "hyperparameters": config.hyperparameters()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = config.work_dir or settings.cache_dir / "training"
    folder = root / f"{config.preset}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _last_checkpoint(work_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    checkpoints = work_dir / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        log.info("Resuming from %s", last)
    return last


def _trainer(model, tokenizer, train_set: list[Example], val_set: list[Example], config: TrainConfig,
             work_dir: Path, bf16: bool):
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(work_dir / "checkpoints"), per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, num_train_epochs=config.epochs, max_steps=config.max_steps,
        lr_scheduler_type="cosine", warmup_steps=config.warmup, weight_decay=0.0,
        logging_steps=config.logging_steps, eval_strategy="steps" if val_set else "no",
        eval_steps=config.eval_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, data_seed=config.seed, bf16=bf16, use_cpu=True,
        report_to="none", remove_unused_columns=False, dataloader_num_workers=0, prediction_loss_only=True,
        disable_tqdm=not config.progress_bar,
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return AnswerLossTrainer(
        model=model, args=args, train_dataset=[asdict(e) for e in train_set],
        eval_dataset=[asdict(e) for e in val_set] or None,
        data_collator=lambda batch: collate(batch, pad), callbacks=[ProgressLog(work_dir / "progress.jsonl")],
    )


def _history(log_history: list[dict]) -> list[dict]:
    """The logged training and evaluation losses by step (what the plot draws)."""
    keep = ("loss", "eval_loss")
    rows = [{"step": row["step"], **{k: round(float(row[k]), 4) for k in keep if k in row}}
            for row in log_history if any(k in row for k in keep)]
    return [row for i, row in enumerate(rows) if row not in rows[:i]]  # the final evaluation, once


def _last(history: list[dict], key: str) -> float | None:
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


def _machine(bf16: bool) -> dict:
    import peft
    import torch
    import transformers

    from ftchat.models.cpu import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "precision": "bfloat16 autocast" if bf16 else "float32", "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__}


class ProgressLog(TrainerCallback):
    """One JSON line per logged step in progress.jsonl: step, loss, time spent and left
    (the terminal has Trainer's progress bar; the file is for a run left in the background)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = time.perf_counter()
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock, self.first_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not {"loss", "eval_loss"} & logs.keys():
            return  # the end-of-run summary: the manifest has it
        done = state.global_step - self.first_step
        elapsed = time.perf_counter() - self.clock
        left = elapsed / done * (state.max_steps - state.global_step) if done else None
        row = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "step": state.global_step,
               "of": state.max_steps, "epoch": round(state.epoch or 0.0, 3),
               **{k: round(float(v), 5) for k, v in logs.items()
                  if k in ("loss", "eval_loss", "learning_rate", "grad_norm")},
               "elapsed_s": round(elapsed, 1), "left_s": None if left is None else round(left)}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if args.disable_tqdm:
            log.info("step %d/%d %s", state.global_step, state.max_steps,
                     " ".join(f"{k} {v}" for k, v in row.items() if k in ("loss", "eval_loss", "left_s")))


# --- The result ----------------------------------------------------------------------------


def write_adapter(model, out: Path, manifest: dict) -> dict:
    """Adapter, manifest and loss plot in `out`, replaced in one rename (a crash part-way
    leaves the previous adapter as it was). Returns the manifest with the adapter's sha256."""
    with staged_folder(out) as staging:
        model.save_pretrained(str(staging))
        (staging / "README.md").unlink(missing_ok=True)  # peft's model card template, empty here
        weights = staging / ADAPTER_FILE
        manifest = {**manifest, "adapter_sha256": sha256_file(weights),
                    "adapter_bytes": weights.stat().st_size}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        plot_losses(manifest["history"], staging / PLOT_FILE, manifest["name"])
    return manifest


def plot_losses(history: list[dict], path: Path, title: str) -> None:
    """A PNG of the training and validation loss by step, drawn with Pillow (matplotlib is
    not among ftchat's dependencies, and two lines on axes do not need it)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height, margin = 720, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.font = ImageFont.load_default(size=14)
    series = {key: [(r["step"], r[key]) for r in history if key in r] for key in ("loss", "eval_loss")}
    points = [p for s in series.values() for p in s]
    draw.text((margin, 15), f"{title}: training and validation loss by step", fill="black")
    draw.rectangle([margin, margin, width - 20, height - margin], outline="black")
    if points:
        steps, losses = [p[0] for p in points], [p[1] for p in points]
        low, high = min(losses), max(losses)
        span_x = max(max(steps) - min(steps), 1)
        span_y = (high - low) or 1.0

        def xy(step: float, loss: float) -> tuple[float, float]:
            x = margin + (step - min(steps)) / span_x * (width - 20 - margin)
            y = height - margin - (loss - low) / span_y * (height - 2 * margin)
            return x, y

        for key, colour in (("loss", "#1f77b4"), ("eval_loss", "#d62728")):
            line = [xy(s, v) for s, v in series[key]]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for x, y in line:
                draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        for value in (low, (low + high) / 2, high):
            draw.text((5, xy(min(steps), value)[1] - 6), f"{value:.3f}", fill="black")
        draw.text((margin, height - margin + 8), f"step {min(steps)}", fill="black")
        draw.text((width - 120, height - margin + 8), f"step {max(steps)}", fill="black")
    draw.text((margin + 10, height - 25), "blue: training loss   red: validation loss", fill="black")
    image.save(path, format="PNG")
