"""Choosing the answer's sentences for the question (real bundled embedder, no model)."""

from __future__ import annotations

import pytest

from ftchat.answering import answer as ans
from ftchat.answering import gate, verify
from ftchat.answering.evidence import EvidenceSet, passage_units, question_kind, select_evidence
from ftchat.answering.policy import EVIDENCE
from ftchat.answering.retrieval import Passage
from ftchat.documents.chunking import Chunk

STRATEGY = (
    "Choosing a fine-tuning strategy can follow a short decision guide based on your main constraint:\n\n"
    "- Little data or limited compute: use PEFT, usually LoRA.\n"
    "- Lots of data and ample compute: consider full fine-tuning.\n"
    "- A smaller model for deployment: use knowledge distillation.\n\n"
    "If prompting already meets the quality bar, no fine-tuning may be needed at all."
)
LAYERWISE = (
    "Layer-wise fine-tuning trains only some layers of the network and keeps the rest frozen. "
    "It sits between feature extraction, where only a head is trained, and full fine-tuning. "
    "The top layers are usually the ones unfrozen, because they hold the most task-specific features."
)
OPTIMIZERS = (
    "The optimizer is the algorithm that turns gradients into weight updates. "
    "AdamW, Adam with decoupled weight decay, is the default for fine-tuning transformers; "
    "SGD with momentum, Adafactor and 8-bit Adam are common alternatives when memory is short."
)
OVERVIEW = "This category covers the optimizer, the learning-rate schedule and numeric precision."


def passage(path: tuple[str, ...], text: str, rank: int = 1, dense: float = 0.6) -> Passage:
    return Passage(Chunk(f"c{rank}", "corpus/x.md", path, "line 1", text), 1.0 / rank, rank, dense, 1.0)


@pytest.mark.parametrize("question, kind", [
    ("What is QLoRA?", "definition"),
    ("Which optimizers are commonly chosen for fine-tuning?", "list"),
    ("What tools can I use to track my experiments?", "list"),
    ("How do I choose a fine-tuning strategy?", "how_to"),
    ("Why use a learning-rate warmup?", "why"),
    ("What is the difference between LoRA and QLoRA?", "comparison"),
    ("my model forgot everything after fine-tuning, what now?", "symptom"),
    ("Is DPO an RL method?", "yes_no"),
    ("Can I use a different tokenizer than the pretrained one?", "how_to"),  # "different" is no comparison
])
def test_question_kinds(question: str, kind: str) -> None:
    assert question_kind(question) == kind


def test_a_lead_in_is_one_unit_with_its_list_and_never_alone() -> None:
    units = passage_units(passage(("Strategies", "Choosing a strategy"), STRATEGY))
    assert units[0].text.startswith("Choosing a fine-tuning strategy") and units[0].is_list
    assert units[0].text.count("\n- ") == 3
    assert units[1].text.startswith("If prompting")
    dangling = passage(("S", "T"), "Adapters come in three families:\n\nThey differ in where they sit.")
    assert [u.text for u in passage_units(dangling)] == ["They differ in where they sit."]


def test_a_list_question_gets_the_list(embedder) -> None:
    p = passage(("Strategies", "Choosing a strategy"), STRATEGY)
    evidence = select_evidence("How should I choose a fine-tuning strategy?", [p], embedder)
    text = ans.extractive_answer(evidence)
    assert "- Little data or limited compute: use PEFT" in text
    assert "\n- A smaller model for deployment" in text


def test_a_leaning_sentence_comes_with_its_predecessor_or_not_at_all(embedder) -> None:
    p = passage(("Strategies", "Layer-wise fine-tuning"), LAYERWISE)
    question = "Where does it sit between feature extraction and full fine-tuning?"
    evidence = select_evidence(question, [p], embedder)
    sentences = [e.sentence for e in evidence.items]
    assert any(s.startswith("It sits between") for s in sentences)
    assert sentences.index(next(s for s in sentences if s.startswith("It sits"))) > 0
    assert sentences[0].startswith("Layer-wise fine-tuning trains")


def test_the_sentence_that_names_the_items_answers_a_which_question(embedder) -> None:
    overview = passage(("Key concepts", "Model configuration"), OVERVIEW, rank=1, dense=0.55)
    term = passage(("Key concepts", "Model configuration", "Optimizers"), OPTIMIZERS, rank=2, dense=0.5)
    question = "Which optimizers are commonly chosen for fine-tuning?"
    evidence = select_evidence(question, [overview, term], embedder)
    text = ans.extractive_answer(evidence)
    assert "AdamW" in text
    assert "This category" not in text  # a category overview never answers when its term section does


def test_answer_length_follows_the_question(embedder) -> None:
    long_section = " ".join([LAYERWISE, OPTIMIZERS, LAYERWISE.replace("Layer-wise", "Partial"),
                             OPTIMIZERS.replace("AdamW", "Lion"), STRATEGY.replace("\n", " ")])
    p = passage(("Strategies", "Layer-wise fine-tuning"), long_section)

    def words(question: str) -> int:
        return sum(len(e.sentence.split()) for e in select_evidence(question, [p], embedder).items)

    assert words("What is layer-wise fine-tuning?") <= EVIDENCE.word_budget["definition"]
    assert words("What is layer-wise fine-tuning?") < words(
        "Which optimizers and layers are common, and how do layer-wise and partial fine-tuning differ?")


def test_declines_name_only_sections_that_come_close() -> None:
    far = passage(("Key concepts", "Mixed precision training"), "Mixed precision ...", dense=0.14)
    near = passage(("Key concepts", "Regularization"), "Dropout ...", rank=2, dense=0.28)
    assert gate.closest_sections([far]) == []
    assert gate.declined_text([]) == gate.NOT_COVERED
    assert [p.chunk.title for p in gate.closest_sections([near, far])] == [
        "Key concepts › Regularization"]


def test_model_sentences_that_echo_the_question_or_flip_the_evidence_are_rejected(embedder) -> None:
    p = passage(("Key concepts", "Causal language modeling (CLM)"), "Causal language modeling trains a "
                "model to predict the next token from the tokens before it.")
    evidence = select_evidence("What is causal language modeling?", [p], embedder)
    assert isinstance(evidence, EvidenceSet) and evidence.items
    faithful = "Causal language modeling trains a model to predict the next token. [1]"
    assert verify.verify_sentence(faithful, evidence, embedder).supported
    echo = "What is causal language modeling? [1]"
    assert not verify.verify_sentence(echo, evidence, embedder).supported
    flipped = "Causal language modeling trains a model rather than the tokens before it. [1]"
    assert not verify.verify_sentence(flipped, evidence, embedder).supported


def test_the_top_ranked_section_keeps_its_best_sentence_when_another_leads() -> None:
    import numpy as np

    from ftchat.answering.evidence import Unit, _choose

    favourite = passage(("Key concepts", "Full fine-tuning"), "x", rank=1)
    closer = passage(("Key concepts", "Optimizers"), "y", rank=2)
    units = [Unit(favourite, 0, "Full fine-tuning usually uses AdamW."),
             Unit(favourite, 1, "Each version is stored as a full copy."),
             Unit(closer, 0, "AdamW is the default optimizer for transformers.")]
    vectors = np.eye(3, dtype=np.float32)  # no two units are near-duplicates

    def chosen(favourite_score: float) -> list[int]:
        return sorted(_choose(units, vectors, [favourite_score, 0.1, 0.9], "other", set(), set()))

    assert chosen(0.9 - EVIDENCE.favourite_margin / 2) == [0, 2]  # its best unit joins, not its section
    assert chosen(0.9 - EVIDENCE.favourite_margin * 3) == [2]  # too far below the lead: left out


def test_a_category_overview_is_not_the_favourite_when_its_term_was_found() -> None:
    import numpy as np

    from ftchat.answering.evidence import Unit, _choose

    overview = passage(("Key concepts", "Active learning"), "x", rank=1)
    term = passage(("Key concepts", "Active learning", "Uncertainty sampling"), "y", rank=2)
    units = [Unit(overview, 0, "Active learning picks which examples to label."),
             Unit(term, 0, "Uncertainty sampling labels the examples the model is least sure of.")]
    vectors = np.eye(2, dtype=np.float32)
    scores = [0.9 - EVIDENCE.favourite_margin / 2, 0.9]
    assert sorted(_choose(units, vectors, scores, "other", set(), set())) == [0, 1]
    assert _choose(units, vectors, scores, "other", set(), {overview.chunk.id}) == [1]
