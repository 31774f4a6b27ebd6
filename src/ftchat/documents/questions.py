"""Sample questions: the ways people ask about each section of the guide.

A question in everyday words ("my model forgot everything after fine-tuning") is often
nearer to another question about the same section than to the section's own prose, which
names the technique ("Elastic Weight Consolidation") rather than the symptom. So the index
also embeds the training questions of `train/questions.jsonl`, each naming the section that
answers it, and retrieval counts a section as near as the nearest of its text and the
ways it is asked about (retrieval.Retriever). The eval sets are never among them: a test
keeps every sample question clear of every eval question (cosine < 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftchat.files import read_lines


@dataclass(frozen=True)
class SampleQuestion:
    question: str
    section: str  # the answering section's heading path, as Chunk.title spells it

    def to_json(self) -> dict:
        return {"question": self.question, "section": self.section}


def load_sample_questions(path: Path) -> tuple[list[SampleQuestion], list[str]]:
    """The in-scope questions of a training file with their first (answering) section, and
    a warning per row that could not be used. A missing file is no sample questions."""
    if not path.is_file():
        return [], []
    questions: list[SampleQuestion] = []
    warnings: list[str] = []
    for line in read_lines(path):
        row = line.value
        if line.error:
            problem = line.error
        elif not isinstance(row, dict):
            problem = "a row is a JSON object"
        elif not row.get("answerable", True):
            continue  # out-of-scope questions calibrate the gate; they name no section
        elif not isinstance(row.get("question"), str) or not row["question"].strip():
            problem = 'a row needs a non-empty "question" string'
        elif not isinstance(row.get("sections"), list) or not row["sections"]:
            problem = 'an in-scope row names its answering section in "sections"'
        else:
            questions.append(SampleQuestion(" ".join(row["question"].split()), str(row["sections"][0])))
            continue
        warnings.append(f"{path.name}:{line.number}: skipped ({problem})")
    return questions, warnings
