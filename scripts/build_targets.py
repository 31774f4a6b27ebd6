"""Rebuild the fine-tuning rows of train/targets*.jsonl for the pipeline as it is today.

    PYTHONPATH=src .venv/bin/python scripts/build_targets.py [train/targets.jsonl ...]

Each row keeps what a writer wrote (`answer`: cited sentences written for the evidence the
pipeline selected for `question`) and gets what training needs:
- `messages`: exactly what `answer.build_messages` builds for that evidence, ending with the
  answer's opening (`answer.opening`) as the start of the assistant's turn, because the
  page shows the opening before the model writes and the model continues from it;
- `target`: the written sentences the opening does not already say ("" when it says it all,
  and the model learns to stop there).

A row whose written sentences no longer all pass verification against today's evidence, or
whose evidence misses the row's answering section, is dropped and counted: run this after
any change to retrieval or evidence selection (tests/test_training_data.py fails until then).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ftchat.answering import answer as ans
from ftchat.answering import prompt, verify
from ftchat.answering.evidence import EvidenceSet
from ftchat.api import Assistant
from ftchat.config import REPO_ROOT
from ftchat.files import write_text_atomically
from ftchat.text import split_sentences

DEFAULT_FILES = [REPO_ROOT / "train" / "targets.jsonl", REPO_ROOT / "train" / "targets.val.jsonl"]


def continuation(written: str, evidence: EvidenceSet, assistant: Assistant) -> str | None:
    """The written sentences after the opening, or None when one fails verification."""
    kept = []
    for sentence in split_sentences(written):
        verdict = verify.verify_sentence(sentence, evidence, assistant.retriever.embedder)
        if not ans.cited_numbers(sentence) or not verdict.supported:
            return None
        if verdict.item != 0:  # item 0 is the opening: the reader has it already
            kept.append(sentence.strip())
    return " ".join(kept)


def rebuild(row: dict, assistant: Assistant) -> dict | None:
    written = row.get("answer") or row["target"]
    evidence = assistant.evidence(row["question"])  # as for a first question
    if not {e.passage.chunk.title for e in evidence.items} & set(row["sections"]):
        return None
    target = continuation(written, evidence, assistant)
    if target is None:
        return None
    messages = prompt.build_messages(row["question"], evidence, start=ans.opening(evidence))
    return {**row, "answer": written, "messages": messages, "target": target}


def main(paths: list[Path]) -> None:
    assistant = Assistant()
    for path in paths:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        built = [out for row in rows if (out := rebuild(row, assistant)) is not None]
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in built)
        write_text_atomically(path, lines)
        ends = sum(1 for row in built if not row["target"])
        print(f"{path}: {len(built)} of {len(rows)} rows kept, {ends} end at the opening")


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]] or DEFAULT_FILES)
