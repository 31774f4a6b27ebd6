"""The learned ranker: reorders the hybrid's best passages by weights fitted on the guide's
own questions (tools/ranker_training.py, `make train-ranker`).

The hybrid order adds a passage's cosine, its BM25 score and its nearest sample question
with hand-set weights (retrieval.Retriever._fuse). The ranker reads those and a few more
signals about each of the best `depth` passages, the ones the hand-set sum cannot weigh:
how many of the question's nearest sample questions were asked about that section, how far
it trails the best passage on each signal, whether it is a category's opening paragraph
(which names none of the items its subsections list), how much of its heading the question
repeats. A logistic regression over them, fitted on 1,500 questions of train/ whose
candidates were mined from ftchat's own retrieval, gives each passage the log-odds that it
answers the question; the gate can read the best one (gate.py).

It is off unless FTCHAT_RANKER=on: it gained on train/'s validation split and lost on the
eval sets and with a blind judge (docs/ranker.md). Two neural shapes were measured first
and lost on the validation split itself: a cross-encoder from the bundled MiniLM and the
MiniLM fine-tuned. This one costs a dot product per passage.

It ships as `ranker.json` beside this module: the weights and a manifest (features, the
data's sha256, settings, validation figures, the machine), with the sha256 of the weights
in the manifest. A missing or damaged file is one warning line and the hybrid order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftchat.config import RANKER_FILE
from ftchat.files import json_digest, read_trained_file
from ftchat.text import tokenize

log = logging.getLogger(__name__)

FORMAT = 1
FEATURES = (
    "dense", "dense_gap", "keyword", "asked", "asked_gap", "asked_votes", "fused", "fused_rank",
    "has_subsections", "depth", "title_overlap", "length",
)
# Nearest sample questions that vote for their sections (1/rank each).
VOTERS = 10


class RankerUnavailable(Exception):
    """A ranker file that must not be used (missing, damaged, for other features); one line."""


@dataclass(frozen=True)
class Candidate:
    """What the ranker reads about one passage (retrieval.Passage's scores and its section)."""

    title: str
    text_words: int
    dense: float
    keyword: float
    asked: float
    fused: float
    rank: int


@dataclass(frozen=True)
class LearnedRanker:
    coefficients: np.ndarray  # per feature, on standardized features
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    depth: int  # how many of the hybrid's best passages it reorders
    manifest: dict

    @classmethod
    def from_json(cls, data: dict) -> LearnedRanker:
        manifest, weights = data["manifest"], data["weights"]
        if manifest.get("format") != FORMAT or tuple(manifest.get("features", ())) != FEATURES:
            raise RankerUnavailable(f"not a format-{FORMAT} ranker over this version's features")
        if json_digest(weights) != manifest.get("weights_sha256"):
            raise RankerUnavailable("its weights differ from the sha256 its manifest records (damaged)")
        arrays = [np.asarray(weights[k], dtype=np.float64) for k in ("coefficients", "mean", "scale")]
        if any(a.shape != (len(FEATURES),) or not np.all(np.isfinite(a)) for a in arrays):
            raise RankerUnavailable("its weights do not match its features")
        return cls(*arrays[:1], float(weights["intercept"]), *arrays[1:], int(manifest["depth"]), manifest)

    def to_json(self) -> dict:
        weights = {"coefficients": self.coefficients.tolist(), "intercept": self.intercept,
                   "mean": self.mean.tolist(), "scale": self.scale.tolist()}
        manifest = {**self.manifest, "format": FORMAT, "features": list(FEATURES), "depth": self.depth,
                    "weights_sha256": json_digest(weights)}
        return {"manifest": manifest, "weights": weights}

    def logits(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale @ self.coefficients + self.intercept


def section_votes(question_vector: np.ndarray, question_vectors: np.ndarray,
                  sections: Sequence[str]) -> dict[str, float]:
    """Each section's share of the question's nearest sample questions, 1/rank each: ten
    people's questions about a section say more than the single nearest one does."""
    if not len(question_vectors):
        return {}
    sims = question_vectors @ question_vector
    votes: dict[str, float] = {}
    for rank, i in enumerate(np.argsort(-sims)[:VOTERS], start=1):
        votes[sections[i]] = votes.get(sections[i], 0.0) + 1.0 / rank
    return votes


def features(query: str, candidates: Sequence[Candidate], votes: dict[str, float],
             parents: set[str]) -> np.ndarray:
    """One row of FEATURES per candidate. `parents`: titles that have subsections."""
    best_dense = max(c.dense for c in candidates)
    best_keyword = max(c.keyword for c in candidates) or 1.0
    best_asked = max(c.asked for c in candidates)
    asked_terms = set(tokenize(query))
    rows = []
    for c in candidates:
        heading = set(tokenize(c.title.rsplit(" › ", 1)[-1]))
        rows.append([
            c.dense, c.dense - best_dense, c.keyword / best_keyword, c.asked, c.asked - best_asked,
            votes.get(c.title, 0.0), c.fused, float(c.rank), float(c.title in parents),
            float(c.title.count(" › ")), len(heading & asked_terms) / max(len(heading), 1),
            c.text_words / 170,
        ])
    return np.asarray(rows, dtype=np.float64)


def load_ranker(path: Path = RANKER_FILE) -> LearnedRanker | None:
    """The shipped ranker, or None with one warning line when it cannot be used."""
    loaded = read_trained_file(path, LearnedRanker.from_json, RankerUnavailable, "make train-ranker")
    if isinstance(loaded, str):
        log.warning("Learned ranker %s not used, passages keep the hybrid order: %s", path, loaded)
        return None
    return loaded
