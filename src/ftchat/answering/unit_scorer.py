"""The learned unit scorer: how likely a unit of the retrieved passages states one of the
points a good answer to the question makes (tools/evidence_training.py, `make train-scorer`).

Every question of train/questions.jsonl names its nuggets, the facts a good answer states;
a unit of its retrieved passages that states one is a positive, the others negatives. A
logistic regression reads what is known of each unit before the question comes (its
vector, shipped with the guide's) against the question's vector (their elementwise
product), and a few cheap signals: the unit's cosine and keyword overlap with the question,
its place in its section, whether it opens a list, leans on the sentence before it or
announces items, its section's retrieval scores (not its nearest sample question's: the
validation split's questions have near twins among the training ones, which unseen
questions lack, and that signal gained nothing there), and the kind of question crossed with the
signals the hand rules used to nudge by (a remedy for a symptom, a cause for "why").
Scoring the units of five passages is one matrix product: well under a millisecond.

A cross-encoder over (question, unit) pairs reads the words themselves, but costs a
forward pass per unit: 20 units took hundreds of milliseconds on 2 cores (docs/evaluation.md).

It ships as `unit_scorer.json` beside this module: the weights and a manifest (features,
data sha256, settings, the choice's fitted settings, validation figures and the ablation
table, machine), with the sha256 of the weights. A missing or damaged file is one warning
line, and the hand rules choose (evidence.py).

It is off unless FTCHAT_SCORER=on: it tied the hand rules on train/'s validation split and
raised nugget recall on the eval sets, but a blind judge read its answers as less readable
(docs/evaluation.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftchat.answering.units import CAUSE, ENUMERATION, REMEDY, Unit
from ftchat.config import UNIT_SCORER_FILE
from ftchat.files import json_digest, read_trained_file
from ftchat.text import tokenize

log = logging.getLogger(__name__)

FORMAT = 1
KINDS = ("definition", "list", "how_to", "why", "comparison", "symptom", "yes_no", "other")
SIGNALS = (
    "cosine", "overlap", "own_terms_asked", "opening", "position", "is_list", "leans", "announces",
    "words", "enumerations", "code_spans", "remedy", "cause", "rank", "section_cosine", "section_gap",
    "overview", "top_section",
)
# The signals each kind of question may weigh its own way (the old hand nudges' inputs).
CROSSED = ("cosine", "overlap", "opening", "is_list", "enumerations", "remedy", "cause")


def feature_names(dimensions: int) -> list[str]:
    crossed = [f"{kind}*{signal}" for kind in KINDS for signal in CROSSED]
    return [*SIGNALS, *(f"kind={k}" for k in KINDS), *crossed, *(f"q*u[{i}]" for i in range(dimensions))]


class ScorerUnavailable(Exception):
    """A scorer file that must not be used (missing, damaged, other features); one line."""


def unit_signals(units: Sequence[Unit], cosines: np.ndarray, overlaps: Sequence[float],
                 question_terms: set[str], overviews: set[str]) -> np.ndarray:
    """One row of SIGNALS per unit. `overlaps`: the idf-weighted share of the question's
    terms each unit contains; `overviews`: chunk ids of category openings."""
    best_section = max(u.passage.dense for u in units)
    top_rank = min(u.passage.rank for u in units)
    rows = []
    for unit, cosine, overlap in zip(units, cosines, overlaps, strict=True):
        own = set(tokenize(unit.text))
        text, passage = unit.text, unit.passage
        rows.append([
            float(cosine), overlap, len(own & question_terms) / max(len(own), 1),
            float(unit.position == 0), min(unit.position, 10) / 10, float(unit.is_list), float(unit.leans),
            float(unit.announced > 0), min(unit.words, 80) / 40, min(len(ENUMERATION.findall(text)), 6) / 6,
            min(text.count("`") // 2, 3) / 3, float(REMEDY.search(text) is not None),
            float(CAUSE.search(text) is not None),
            (passage.rank - 1) / 4, passage.dense, passage.dense - best_section,
            float(passage.chunk.id in overviews), float(passage.rank == top_rank),
        ])
    return np.asarray(rows, dtype=np.float64).reshape(len(units), len(SIGNALS))


def unit_features(signals: np.ndarray, kind: str, unit_vectors: np.ndarray,
                  query_vector: np.ndarray) -> np.ndarray:
    """The scorer's rows: the signals, the kind of question alone and crossed with the
    signals it may weigh its own way, and the question-unit elementwise product."""
    one_hot = np.asarray([float(kind == k) for k in KINDS])
    crossed_columns = [SIGNALS.index(s) for s in CROSSED]
    crossed = np.einsum("k,ns->nks", one_hot, signals[:, crossed_columns]).reshape(len(signals), -1)
    products = unit_vectors.astype(np.float64) * query_vector.astype(np.float64)
    return np.hstack([signals, np.tile(one_hot, (len(signals), 1)), crossed, products])


@dataclass(frozen=True)
class UnitScorer:
    coefficients: np.ndarray  # per feature, on standardized features
    intercept: float
    mean: np.ndarray
    scale: np.ndarray
    manifest: dict

    @classmethod
    def from_json(cls, data: dict) -> UnitScorer:
        manifest, weights = data["manifest"], data["weights"]
        if manifest.get("format") != FORMAT or manifest.get("signals") != list(SIGNALS) \
                or manifest.get("kinds") != list(KINDS):
            raise ScorerUnavailable(f"not a format-{FORMAT} scorer over this version's features")
        if json_digest(weights) != manifest.get("weights_sha256"):
            raise ScorerUnavailable("its weights differ from the sha256 its manifest records (damaged)")
        arrays = [np.asarray(weights[k], dtype=np.float64) for k in ("coefficients", "mean", "scale")]
        size = len(feature_names(int(manifest["dimensions"])))
        if any(a.shape != (size,) or not np.all(np.isfinite(a)) for a in arrays) or np.any(arrays[2] <= 0):
            raise ScorerUnavailable("its weights do not match its features")
        return cls(arrays[0], float(weights["intercept"]), arrays[1], arrays[2], manifest)

    def to_json(self) -> dict:
        weights = {"coefficients": self.coefficients.tolist(), "intercept": self.intercept,
                   "mean": self.mean.tolist(), "scale": self.scale.tolist()}
        manifest = {**self.manifest, "format": FORMAT, "signals": list(SIGNALS), "kinds": list(KINDS),
                    "dimensions": self.dimensions, "weights_sha256": json_digest(weights)}
        return {"manifest": manifest, "weights": weights}

    @property
    def choice(self) -> dict:
        """The choice's settings fitted with it (policy.EvidencePolicy.with_choice)."""
        return dict(self.manifest.get("choice", {}))

    @property
    def dimensions(self) -> int:
        """How many question-unit vector products it reads (the embedder's width)."""
        return len(self.coefficients) - len(feature_names(0))

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """The probability that each row's unit states one of the question's points."""
        logits = (features - self.mean) / self.scale @ self.coefficients + self.intercept
        return 0.5 * (1.0 + np.tanh(0.5 * logits))  # the logistic function, without overflow


def load_unit_scorer(path: Path = UNIT_SCORER_FILE) -> UnitScorer | None:
    """The shipped scorer, or None with one warning line when it cannot be used."""
    loaded = read_trained_file(path, UnitScorer.from_json, ScorerUnavailable, "make train-scorer")
    if isinstance(loaded, str):
        log.warning("Unit scorer %s not used, the hand rules choose the evidence: %s", path, loaded)
        return None
    return loaded
