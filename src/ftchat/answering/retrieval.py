"""Hybrid retrieval: dense (FAISS) and keyword (BM25) scores fused into one weighted score."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ftchat.answering.rerank import Candidate, LearnedRanker, features, section_votes
from ftchat.config import Settings
from ftchat.documents.chunking import Chunk
from ftchat.index.store import Index
from ftchat.models.embedding import Embedder


class QuestionError(ValueError):
    """A question that cannot be answered as given (empty, for instance)."""


@dataclass(frozen=True)
class Passage:
    chunk: Chunk
    score: float  # fused score: what the ranking is by
    rank: int  # 1-based
    dense: float  # cosine similarity between question and chunk
    keyword: float  # BM25 score
    asked: float = 0.0  # cosine to the nearest sample question about its section (questions.py)
    learned: float | None = None  # the learned ranker's logit (rerank.py); None: not reranked

    def to_json(self) -> dict:
        return {
            "rank": self.rank,
            "chunk_id": self.chunk.id,
            "title": self.chunk.title,
            "source": self.chunk.source,
            "location": self.chunk.location,
            "text": self.chunk.text,
            "score": round(self.score, 6),
            "dense_score": round(self.dense, 4),
            "keyword_score": round(self.keyword, 4),
            "asked_score": round(self.asked, 4),
            "learned_score": None if self.learned is None else round(self.learned, 4),
        }


def clean_question(question: str, settings: Settings) -> str:
    text = " ".join((question or "").split())
    if not text:
        raise QuestionError("The question is empty. Type a question about fine-tuning LLMs.")
    # The embedder reads ~256 word pieces; anything past a couple of thousand characters
    # only slows BM25 down and changes nothing for the dense side.
    return text[: settings.max_question_chars]


class Retriever:
    def __init__(self, index: Index, embedder: Embedder, settings: Settings,
                 ranker: LearnedRanker | None = None) -> None:
        self.index = index
        self.embedder = embedder
        self.settings = settings
        self.ranker = ranker  # None: the hybrid order stands
        titles = sorted({c.title for c in index.chunks})
        self._title_ids = {t: i for i, t in enumerate(titles)}
        self._chunk_title_ids = np.array([self._title_ids[c.title] for c in index.chunks], dtype=np.int64)
        self._question_title_ids = np.array(
            [self._title_ids[q.section] for q in index.questions], dtype=np.int64
        )
        self._question_sections = [q.section for q in index.questions]
        self._parents = {t.rsplit(" › ", 1)[0] for t in titles if " › " in t}

    def search(self, question: str, k: int | None = None, vector: np.ndarray | None = None) -> list[Passage]:
        """The k best passages for a question as typed; `vector` is its embedding when the
        caller has it."""
        return self.ranked(clean_question(question, self.settings), k, vector)

    def ranked(self, query: str, k: int | None = None, vector: np.ndarray | None = None) -> list[Passage]:
        """The k best passages for a query already cleaned (clean_question)."""
        k = self.settings.top_k if k is None else k
        if k < 1:
            raise QuestionError("k must be at least 1")
        n = len(self.index)
        depth = min(max(self.settings.candidates, k), n)

        vector = self.embedder.encode([query]) if vector is None else vector.reshape(1, -1)
        dense_scores, dense_ids = self.index.vectors.search(vector, depth)
        pairs = zip(dense_ids[0], dense_scores[0], strict=True)
        dense_by_doc = {int(d): float(s) for d, s in pairs if d >= 0}
        keyword_scores = self.index.keyword.scores(query)
        keyword_order = np.argsort(-keyword_scores, kind="stable")[:depth]
        keyword_ranked = [int(d) for d in keyword_order if keyword_scores[d] > 0]

        asked = self._asked(vector[0])
        # The sections most like a sample question are candidates even when their text is
        # not; keyword-only candidates and these need a cosine too: the gate uses it.
        asked_ranked = [int(d) for d in np.argsort(-asked, kind="stable")[:depth] if asked[d] > 0]
        missing_dense = [d for d in dict.fromkeys(keyword_ranked + asked_ranked) if d not in dense_by_doc]
        if missing_dense:
            stored = np.stack([self.index.vectors.reconstruct(d) for d in missing_dense])
            for d, s in zip(missing_dense, stored @ vector[0], strict=True):
                dense_by_doc[d] = float(s)
        fused = self._fuse(dense_by_doc, keyword_scores, asked)
        order = sorted(fused, key=lambda d: (-fused[d], d))
        passages = {
            d: Passage(self.index.chunks[d], fused[d], rank, dense_by_doc[d], float(keyword_scores[d]),
                       float(asked[d]))
            for rank, d in enumerate(order[: max(k, self.ranker.depth if self.ranker else 0)], start=1)
        }
        learned = self._learned(query, vector[0], passages)
        if learned:
            order = sorted(learned, key=lambda d: -learned[d]) + order[len(learned):]
        return [replace(passages[d], rank=rank, learned=learned.get(d))
                for rank, d in enumerate(order[:k], start=1)]

    def _learned(self, query: str, vector: np.ndarray, candidates: dict[int, Passage]) -> dict[int, float]:
        """The learned ranker's logit for each of the hybrid's best `ranker.depth` passages
        (`candidates`, by doc id in the hybrid order; rerank.py); empty without a ranker.
        Below them the hybrid order stands."""
        if self.ranker is None or not candidates:
            return {}
        top = list(candidates.items())[: self.ranker.depth]
        rows = self.ranking_features(query, vector, [p for _, p in top])
        return {d: float(s) for (d, _), s in zip(top, self.ranker.logits(rows), strict=True)}

    def ranking_features(self, query: str, vector: np.ndarray, passages: list[Passage]) -> np.ndarray:
        """What the learned ranker reads about each passage (rerank.FEATURES), row by row;
        its training mines the same rows (tools/ranker_training.py)."""
        votes = section_votes(vector, self.index.question_vectors, self._question_sections)
        return features(query, [candidate(p) for p in passages], votes, self._parents)

    def _asked(self, vector: np.ndarray) -> np.ndarray:
        """Per chunk, the cosine between the question and the nearest sample question about
        its section (0 for a section nobody wrote sample questions for)."""
        best = np.zeros(len(self._title_ids), dtype=np.float32)
        if len(self.index.questions):
            np.maximum.at(best, self._question_title_ids, self.index.question_vectors @ vector)
        return best[self._chunk_title_ids]

    def _fuse(self, dense_by_doc: dict[int, float], keyword_scores: np.ndarray,
              asked: np.ndarray) -> dict[int, float]:
        """A convex combination of cosine similarity and BM25 scaled by its best score.

        Reciprocal rank fusion threw away how far ahead a passage was: a section the
        embedder ranked 2nd but BM25 ranked 48th (a question in everyday words) lost to
        passages both ranked 5th. Scores keep that margin (README, "How it works"). The
        cosine is the larger of the text's and the weighted nearest sample question's, so a
        section nobody wrote questions for (an uploaded document) loses nothing by it.
        """
        alpha = self.settings.dense_weight
        best_keyword = float(keyword_scores.max()) if len(keyword_scores) else 0.0
        scale = 1.0 / best_keyword if best_keyword > 0 else 0.0
        weight = self.settings.asked_weight
        return {
            d: alpha * max(cosine, weight * float(asked[d])) + (1 - alpha) * float(keyword_scores[d]) * scale
            for d, cosine in dense_by_doc.items()
        }


def candidate(passage: Passage) -> Candidate:
    """What the learned ranker reads about a passage."""
    return Candidate(passage.chunk.title, len(passage.chunk.text.split()), passage.dense,
                     passage.keyword, passage.asked, passage.score, passage.rank)
