"""BM25 over the chunks' words, stored as JSON beside the FAISS vectors (never rebuilt per query)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ftchat.text import tokenize


@dataclass
class KeywordIndex:
    postings: dict[str, list[list[int]]]
    doc_lengths: list[int]
    k1: float = 1.5
    b: float = 0.75

    @classmethod
    def build(cls, texts: list[str]) -> KeywordIndex:
        postings: dict[str, list[list[int]]] = {}
        lengths = []
        for doc, text in enumerate(texts):
            terms = tokenize(text)
            lengths.append(len(terms))
            for term, count in Counter(terms).items():
                postings.setdefault(term, []).append([doc, count])
        return cls(postings, lengths)

    def idf(self, term: str) -> float:
        """How rare a (tokenized) term is among the chunks; unknown terms count as rarest."""
        n = len(self.doc_lengths)
        df = len(self.postings.get(term, ()))
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> np.ndarray:
        n = len(self.doc_lengths)
        result = np.zeros(n, dtype=np.float32)
        if n == 0:
            return result
        average = max(sum(self.doc_lengths) / n, 1.0)
        for term in set(tokenize(query)):
            rows = self.postings.get(term)
            if not rows:
                continue
            idf = self.idf(term)
            for doc, tf in rows:
                norm = tf + self.k1 * (1 - self.b + self.b * self.doc_lengths[doc] / average)
                result[doc] += idf * tf * (self.k1 + 1) / norm
        return result

    def to_json(self) -> dict:
        return {"k1": self.k1, "b": self.b, "doc_lengths": self.doc_lengths, "postings": self.postings}

    @classmethod
    def from_json(cls, data: dict) -> KeywordIndex:
        return cls(data["postings"], data["doc_lengths"], float(data["k1"]), float(data["b"]))
