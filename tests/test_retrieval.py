"""Hybrid retrieval over the real small index: exact rare terms, paraphrases, odd questions."""

from __future__ import annotations

import pytest

from ftchat.answering import gate
from ftchat.answering.retrieval import QuestionError, Retriever
from ftchat.text import tokenize


@pytest.fixture(scope="module")
def retriever(small_index, embedder, small_corpus_settings):
    return Retriever(small_index, embedder, small_corpus_settings)


def top_titles(passages, n=1):
    return [p.chunk.title for p in passages[:n]]


@pytest.mark.parametrize(
    "question, expected_title",
    [
        ("SMOTE", "Fine-tuning guide › Data preparation › Imbalanced data"),
        ("GPTQ", "Fine-tuning guide › Efficiency › Quantization"),
        ("EWC", "Strategies › Elastic Weight Consolidation"),
        ("what does SMOTE do?", "Fine-tuning guide › Data preparation › Imbalanced data"),
    ],
)
def test_exact_rare_terms_rank_first(retriever, question, expected_title):
    passages = retriever.search(question, 5)
    assert top_titles(passages) == [expected_title]
    assert passages[0].keyword > 0  # the keyword side found it


@pytest.mark.parametrize(
    "question, expected_title",
    [
        (
            "How can I train with a bigger effective batch than my graphics card memory allows?",
            "Fine-tuning guide › Key concepts › Gradient accumulation",
        ),
        (
            "my dataset has very few examples of one category, how do I even it out",
            "Fine-tuning guide › Data preparation › Imbalanced data",
        ),
        (
            "teach a compact network to copy a big network's predictions",
            "Fine-tuning guide › Efficiency › Knowledge distillation",
        ),
    ],
)
def test_paraphrases_find_the_right_section(retriever, question, expected_title):
    passages = retriever.search(question, 5)
    assert expected_title in top_titles(passages, 2), [p.chunk.title for p in passages]


def test_ranks_are_one_to_k_and_scores_descend(retriever):
    passages = retriever.search("LoRA adapters and quantization", 4)
    assert [p.rank for p in passages] == [1, 2, 3, 4]
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
    assert len({p.chunk.id for p in passages}) == 4


def test_default_k_comes_from_settings(retriever, small_corpus_settings):
    assert len(retriever.search("LoRA")) == small_corpus_settings.top_k


@pytest.mark.parametrize("question", ["", "   ", "\n\t  \n", None])
def test_empty_question_is_a_clear_error(retriever, question):
    with pytest.raises(QuestionError, match="empty"):
        retriever.search(question, 3)


def test_very_long_question_works(retriever):
    question = "How does SMOTE balance a dataset? " + ("please explain in detail " * 900)
    question = question[:20_000]
    assert len(question) == 20_000
    passages = retriever.search(question, 3)
    assert [p.rank for p in passages] == [1, 2, 3]
    assert passages[0].chunk.title.endswith("Imbalanced data")


def test_k_larger_than_the_index(retriever, small_index):
    passages = retriever.search("fine-tuning", 500)
    assert len(passages) == len(small_index.chunks)
    assert [p.rank for p in passages] == list(range(1, len(small_index.chunks) + 1))
    assert {p.chunk.id for p in passages} == {c.id for c in small_index.chunks}


def test_k_below_one_is_refused(retriever):
    with pytest.raises(QuestionError):
        retriever.search("LoRA", -1)


def test_question_with_no_known_words_still_returns_dense_hits(retriever):
    passages = retriever.search("zzzqqq xxyyzz", 3)
    assert len(passages) == 3
    assert all(p.keyword == 0 for p in passages)


@pytest.mark.parametrize("question, names", [
    ("What is DoRA?", ["DoRA"]),
    ("How does ALiBi compare with Adafactor?", ["ALiBi", "Adafactor"]),
    ("Is DoRA (weight-decomposed) better than GPTQ?", ["DoRA"]),
    ("How does QLoRA compare with SMOTE?", []),  # both in the index
    ("Can SMOTE help my Spanish users?", []),  # a name, but not what the question asks about
    ("how much VRAM does GPTQ save?", []),
    ("Beginner here. What is SMOTE?", []),  # a capital that only opens a sentence
    ("what is dora", []),  # lower case names nothing
])
def test_unknown_names_are_the_question_names_the_index_never_mentions(retriever, question, names):
    assert gate.unknown_names(question, retriever.index.keyword) == names


def test_passage_json_has_the_contract_fields(retriever):
    row = retriever.search("LoRA", 1)[0].to_json()
    chunk = retriever.search("LoRA", 1)[0].chunk
    assert {"rank", "chunk_id", "title", "source", "location", "text", "score"} <= set(row)
    assert row["title"] == " › ".join(chunk.heading_path)
    assert row["chunk_id"] == chunk.id and row["rank"] == 1


def test_fused_score_weighs_cosine_against_scaled_bm25(retriever, small_corpus_settings):
    question = "how do I even out a dataset with a rare class"
    best_keyword = float(retriever.index.keyword.scores(question).max())
    alpha = small_corpus_settings.dense_weight
    for p in retriever.search(question, 5):
        assert p.score == pytest.approx(alpha * p.dense + (1 - alpha) * p.keyword / best_keyword, abs=1e-6)


def test_dense_weight_moves_the_ranking_between_the_two_scorers(small_index, embedder, small_corpus_settings):
    question = "shrink the weights to fewer bits with GPTQ"
    dense_only = Retriever(small_index, embedder, small_corpus_settings.with_overrides(dense_weight=1.0))
    keyword_only = Retriever(small_index, embedder, small_corpus_settings.with_overrides(dense_weight=0.0))
    by_dense = dense_only.search(question, 5)
    by_keyword = keyword_only.search(question, 5)
    assert [p.score for p in by_dense] == pytest.approx([p.dense for p in by_dense])
    keyword_scores = [p.keyword for p in by_keyword]
    assert keyword_scores == sorted(keyword_scores, reverse=True) and keyword_scores[0] > 0
    assert [p.chunk.id for p in by_dense] != [p.chunk.id for p in by_keyword]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("finetuning", {"finetun"}),
        ("fine-tuning", {"finetun", "fine", "tun"}),
        ("pre-trained", {"pretrain", "pre", "train"}),
        ("BERT's objective", {"bert", "objectiv"}),
        ("don\u2019t", {"don"}),
    ],
)
def test_keyword_terms_meet_across_spellings(text, expected):
    assert set(tokenize(text)) == expected
