"""What one LoRA training step costs on this machine (docs/training.md reports the figures).

    PYTHONPATH=src .venv/bin/python scripts/measure_training.py [--steps 3] [--threads 2]

Each configuration (float32 or bfloat16 autocast; LoRA on every block or on the top third)
trains the bundled SmolLM2 through training.lora_model and training.answer_loss on batches
of 8 x 256 tokens of the guide's own text, with the loss on the last 64 tokens of each row
(an answer's share), and AdamW as Trainer uses it. One warm-up step is not counted. Prints one JSON line per
configuration, with wall and CPU seconds per step and the fastest step (on a shared
machine the fastest step is the best estimate of what an idle one gives).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from contextlib import nullcontext
from dataclasses import replace

import torch

from ftchat.config import REPO_ROOT, Settings
from ftchat.models.cpu import apply_threads, cpu_model
from ftchat.models.presets import GUIDE_MODEL
from ftchat.tools.training import IGNORE, TrainConfig, answer_loss, base_model, lora_model


def guide_batch(tokenizer, batch: int, length: int, answer: int) -> dict:
    text = " ".join(p.read_text(encoding="utf-8") for p in sorted((REPO_ROOT / "corpus").glob("*.md")))
    ids = tokenizer.encode(text, add_special_tokens=False)
    rows = torch.tensor([ids[i * length:(i + 1) * length] for i in range(batch)])
    labels = rows.clone()
    labels[:, : length - answer] = IGNORE
    return {"input_ids": rows, "labels": labels, "attention_mask": torch.ones_like(rows)}


def measure(config: TrainConfig, bf16: bool, steps: int, batch: dict, settings: Settings,
            full_logits: bool = False) -> dict:
    model, _, _, _ = base_model(settings, GUIDE_MODEL)
    torch.manual_seed(0)
    model = lora_model(model, config).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    times, cpu_times = [], []
    for step in range(steps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = model(**batch).loss if full_logits else answer_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step pays one-off allocations
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    per_step = sum(times) / len(times)
    tokens = batch["input_ids"].numel()
    return {"precision": "bfloat16 autocast" if bf16 else "float32", "rank": config.rank,
            "loss_on": "all logits" if full_logits else "answer positions only",
            "layers": f"top {config.top_layers}" if config.top_layers else "all 30",
            "trainable_params": trainable, "s_per_step": round(per_step, 2),
            "tokens_per_s": round(tokens / per_step, 1), "steps_timed": len(times),
            "step_times": [round(t, 2) for t in times], "fastest_step_s": round(min(times), 2),
            "tokens_per_s_fastest": round(tokens / min(times), 1),
            "cpu_s_per_step": round(sum(cpu_times) / len(cpu_times), 2),
            "load_average": round(os.getloadavg()[0], 1), "loss": round(float(loss), 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="e.g. 'bf16-top' to run one configuration")
    parser.add_argument("--full-logits", action="store_true",
                        help="the model's own loss over every position's logits (for comparison)")
    args = parser.parse_args()
    apply_threads(args.threads)
    settings = Settings(threads=args.threads)
    _, tokenizer, _, _ = base_model(settings, GUIDE_MODEL)
    batch = guide_batch(tokenizer, batch=8, length=256, answer=64)
    print(json.dumps({"cpu": cpu_model(), "threads": torch.get_num_threads(), "batch": "8 x 256 tokens"}))
    base = TrainConfig(rank=16, alpha=32)
    for name, bf16, top in [("fp32-all", False, 0), ("bf16-all", True, 0), ("fp32-top", False, 10),
                            ("bf16-top", True, 10)]:
        if args.only and args.only != name:
            continue
        result = measure(replace(base, top_layers=top), bf16, args.steps, batch, settings, args.full_logits)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
