"""Training the learned unit scorer (answering/unit_scorer.py) on the guide's own questions,
and choosing how evidence is picked with it: `make train-scorer`.

The data is train/questions.jsonl: every in-scope question names its nuggets, the facts a
good answer states. For each question, ftchat's own retrieval gives its passages and
evidence.candidates_for their units; a unit that states one of the question's nuggets (any
of its wordings, as the evaluator reads answers) is a positive, every other unit a
negative. The train split is mined in the ranker's two folds, each against an index whose
sample questions are the other fold's (tools/ranker_training.py), so no question finds
itself; the validation split against an index of the train split's questions.

A logistic regression (scikit-learn) is fitted on the train split. The validation split
then chooses its strength and the choice's settings (policy.EvidencePolicy: the shares of
the lead's probability a unit needs in the leading section and elsewhere, the redundancy
penalty, the word ceiling) by the answers they make: the most complete answers,
then the highest nugget recall, among the settings whose answers are on average no longer
than the hand rules' on the same questions. The eval sets take no part.

`--ablation` also measures each hand rule and each group of the scorer's signals removed
(docs/evaluation.md shows the table). Mining takes under a minute on 2 cores and the fit
seconds, so nothing is kept between runs; the result replaces answering/unit_scorer.json
in one rename.
"""

from __future__ import annotations

import itertools
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ftchat.answering.evidence import Candidates, candidates_for, choose_by_scores, rule_choice
from ftchat.answering.policy import EvidencePolicy
from ftchat.answering.unit_scorer import UnitScorer, feature_names
from ftchat.answering.units import question_parts
from ftchat.config import UNIT_SCORER_FILE, Settings, default_questions_file
from ftchat.files import sha256_file, write_text_atomically
from ftchat.tools.ranker_training import (
    TrainingQuestion,
    _index_with_questions,
    _machine,
    _retriever,
    _validation_index,
    load_questions,
)

log = logging.getLogger(__name__)

# The choice's settings the validation split chooses among (policy.EvidencePolicy).
CHOICE_GRID = {
    "keep_share": (0.0, 0.1, 0.2, 0.3, 0.5),
    "keep_share_elsewhere": (0.5, 0.8, 1.0),
    "redundancy_penalty": (0.0, 0.2, 0.4),
    "max_words": (100, 110, 120),
}


@dataclass(frozen=True)
class ScorerConfig:
    strengths: tuple[float, ...] = (0.03, 0.1, 0.3)  # inverse regularization C; validation chooses
    questions_file: Path = field(default_factory=default_questions_file)
    output_file: Path = UNIT_SCORER_FILE
    work_dir: Path | None = None  # the mining indexes; default: the cache's ranker-training/
    ablation: bool = False
    progress_bar: bool = True

    def with_overrides(self, **changes: object) -> ScorerConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class MinedQuestion:
    """One question's candidate units, their features and which nuggets each states."""

    question: TrainingQuestion
    candidates: Candidates
    features: np.ndarray
    states: np.ndarray  # units x nuggets: whether the unit states the nugget
    part_features: list[np.ndarray]  # per part of a question that asks two things

    @property
    def labels(self) -> np.ndarray:
        return self.states.any(axis=1)


# --- Mining ------------------------------------------------------------------------------


def states_nuggets(text: str, nuggets: Sequence[Sequence[str]]) -> list[bool]:
    """Whether `text` states each nugget: any wording, any case (as the evaluator reads)."""
    lowered = text.lower()
    return [any(wording.lower() in lowered for wording in nugget) for nugget in nuggets]


def mine(rows: Sequence[TrainingQuestion], retriever, policy: EvidencePolicy,
         progress: bool = False) -> list[MinedQuestion]:
    """Each in-scope question with nuggets mined as the pipeline reads it."""
    from tqdm.auto import tqdm

    from ftchat.answering.retrieval import clean_question

    mined = []
    embedder, idf = retriever.embedder, retriever.index.keyword.idf
    for row in tqdm([r for r in rows if r.answerable and r.nuggets], desc="Mining", unit="question",
                    disable=not progress):
        query = clean_question(row.question, retriever.settings)
        vector = embedder.encode([query])[0]
        passages = retriever.ranked(query, retriever.settings.top_k, vector)
        found = candidates_for(query, passages, embedder, query_vector=vector, term_weight=idf,
                               asked=query, policy=policy)
        if found is None:
            continue
        parts = question_parts(query)
        part_features = [] if len(parts) < 2 else [
            found.asking(part, part_vector, idf).features()
            for part, part_vector in zip(parts, embedder.encode(parts), strict=True)]
        states = np.asarray([states_nuggets(u.text, row.nuggets) for u in found.units], dtype=bool)
        mined.append(MinedQuestion(row, found, found.features(), states, part_features))
    return mined


def mine_all(settings: Settings, config: ScorerConfig, rows: list[TrainingQuestion],
             policy: EvidencePolicy) -> tuple[list[MinedQuestion], list[MinedQuestion]]:
    """The train split in the ranker's two folds, and the validation split."""
    work_dir = config.work_dir or settings.cache_dir / "ranker-training"
    train_rows = [r for r in rows if r.split == "train"]
    train = []
    for fold in range(2):
        mined = [r for i, r in enumerate(train_rows) if i % 2 == fold]
        helpers = [r for i, r in enumerate(train_rows) if i % 2 != fold and r.answerable]
        index = _index_with_questions(settings, work_dir / f"fold-{fold}", helpers)
        train += mine(mined, _retriever(settings, index), policy, config.progress_bar)
    index = _validation_index(settings, work_dir, rows)
    validation = mine([r for r in rows if r.split == "validation"], _retriever(settings, index), policy,
                      config.progress_bar)
    return train, validation


# --- Fitting and choosing ------------------------------------------------------------------


def fit(mined: Sequence[MinedQuestion], strength: float, dropped: Sequence[int] = ()) -> UnitScorer:
    """A scorer fitted on these questions' units; `dropped` feature columns held at zero."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rows = np.vstack([m.features for m in mined])
    rows[:, list(dropped)] = 0.0
    labels = np.concatenate([m.labels for m in mined])
    scaler = StandardScaler().fit(rows)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=strength, max_iter=5000).fit((rows - scaler.mean_) / scale, labels)
    coefficients = model.coef_[0].astype(np.float64)
    coefficients[list(dropped)] = 0.0
    return UnitScorer(coefficients, float(model.intercept_[0]), scaler.mean_.astype(np.float64),
                      scale.astype(np.float64), {})


@dataclass(frozen=True)
class Figures:
    """What the chosen evidence tells the reader, over a set of questions."""

    nugget_recall: float
    complete: float
    words: float

    def key(self) -> tuple[float, float]:
        return self.complete, self.nugget_recall

    def to_json(self) -> dict:
        return {"nugget_recall": round(self.nugget_recall, 4), "complete": round(self.complete, 4),
                "words": round(self.words, 1)}


def figures(mined: Sequence[MinedQuestion], choose: Callable[[MinedQuestion], list[int]]) -> Figures:
    recalls, words = [], []
    for m in mined:
        chosen = choose(m)
        stated = m.states[chosen].any(axis=0) if chosen else np.zeros(len(m.question.nuggets), bool)
        # A nugget may span two chosen units that follow each other: read them as one text.
        if not stated.all():
            stated = np.asarray(states_nuggets(" ".join(m.candidates.units[i].text for i in chosen),
                                               m.question.nuggets)) | stated
        recalls.append(float(stated.mean()))
        words.append(sum(m.candidates.units[i].words for i in chosen))
    return Figures(statistics.fmean(recalls), statistics.fmean(r == 1.0 for r in recalls),
                   statistics.fmean(words))


Scores = dict[int, tuple[np.ndarray, list[np.ndarray]]]


def scored(scorer: UnitScorer, mined: Sequence[MinedQuestion]) -> Scores:
    """The scorer's probabilities for each question's units and for each part of a two-part
    question, by id(question): computed once, then read by every setting of the grid."""
    return {id(m): (scorer.probabilities(m.features), [scorer.probabilities(f) for f in m.part_features])
            for m in mined}


def learned_choice(scores: Scores, policy: EvidencePolicy,
                   parts: bool = True) -> Callable[[MinedQuestion], list[int]]:
    def choose(m: MinedQuestion) -> list[int]:
        whole, part_scores = scores[id(m)]
        c = m.candidates
        return choose_by_scores(c.units, c.vectors, whole, set(), policy, part_scores if parts else [])
    return choose


def hand_rules(policy: EvidencePolicy) -> Callable[[MinedQuestion], list[int]]:
    return lambda m: rule_choice(m.candidates, set(), policy)[0]


def _grid() -> Iterator[dict]:
    keys = list(CHOICE_GRID)
    for values in itertools.product(*(CHOICE_GRID[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def choose(train: list[MinedQuestion], validation: list[MinedQuestion], policy: EvidencePolicy,
           strengths: Sequence[float]) -> tuple[UnitScorer, float, dict, dict]:
    """The strength and choice settings whose answers on the validation split are the most
    complete (then the best recall), no longer on average than the hand rules' answers."""
    rules = figures(validation, hand_rules(policy))
    tried = []
    for strength in strengths:
        scorer = fit(train, strength)
        scores = scored(scorer, validation)
        for choice in _grid():
            result = figures(validation, learned_choice(scores, replace(policy, **choice)))
            tried.append((strength, choice, result, scorer))
    allowed = [t for t in tried if t[2].words <= rules.words] or tried
    strength, choice, result, scorer = max(allowed, key=lambda t: (t[2].key(), -t[1]["max_words"]))
    report = {"questions": len(validation), "hand_rules": rules.to_json(), "learned": result.to_json(),
              "tried": len(tried), "length_bound_words": round(rules.words, 1)}
    return scorer, strength, choice, report


# --- Ablation ------------------------------------------------------------------------------

# Each hand rule of evidence._score and _choose, and the settings that remove it.
HAND_RULES = {
    "keyword overlap": {"term_overlap_weight": 0.0},
    "rank penalty": {"rank_penalty": 0.0},
    "code span penalty": {"code_span_penalty": 0.0},
    "opening sentence bonus": {"opening_bonus_defining": 0.0, "opening_bonus_other": 0.0},
    "category overview penalty": {"overview_penalty": 0.0},
    "enumeration and list bonus (list questions)": {"enumeration_bonus": 0.0, "list_bonus": 0.0},
    "remedy bonus (how-to, symptom)": {"remedy_bonus": 0.0},
    "cause bonus (why)": {"cause_bonus": 0.0},
    "favourite section's head start": {"lead_bonus": 0.0},
    "favourite section's best unit joins": {"favourite_margin": -1.0},
    "another section joins with a missing term": {"other_section_margin": 9.0},
    "second side of a comparison": {"comparison_margin": -1.0},
    "word budget by kind (all 110)": {"word_budget": dict.fromkeys(
        ("definition", "yes_no", "why", "other", "how_to", "symptom", "list", "comparison"), 110)},
}
# The scorer's signals in groups, each removed (held at zero) and the scorer refitted.
SIGNAL_GROUPS = {
    "cosine to the question": ("cosine",),
    "keyword overlap": ("overlap", "own_terms_asked"),
    "place in the section": ("opening", "position"),
    "list, enumeration, announced items": ("is_list", "enumerations", "announces"),
    "leans on the sentence before": ("leans",),
    "remedy and cause wording": ("remedy", "cause"),
    "length and code": ("words", "code_spans"),
    "section's retrieval scores": ("rank", "section_cosine", "section_gap", "overview", "top_section"),
}


def _columns(signals: Sequence[str]) -> list[int]:
    """The feature columns of these signals, alone and crossed with the kind of question."""
    names = feature_names(0)
    return [i for i, name in enumerate(names) if name.split("*")[-1] in signals]


def ablation(train: list[MinedQuestion], validation: list[MinedQuestion], policy: EvidencePolicy,
             scorer: UnitScorer, strength: float) -> list[dict]:
    """Validation figures with each hand rule, each group of signals and each learned step
    removed, beside the whole of each."""
    rows = [{"removed": "nothing (hand rules)", **figures(validation, hand_rules(policy)).to_json()}]
    for name, changes in HAND_RULES.items():
        result = figures(validation, hand_rules(replace(policy, **changes)))
        rows.append({"removed": f"hand rule: {name}", **result.to_json()})
    scores = scored(scorer, validation)
    whole = figures(validation, learned_choice(scores, policy))
    rows.append({"removed": "nothing (learned)", **whole.to_json()})
    for name, signals in SIGNAL_GROUPS.items():
        refitted = scored(fit(train, strength, _columns(signals)), validation)
        rows.append({"removed": f"signal: {name}",
                     **figures(validation, learned_choice(refitted, policy)).to_json()})
    steps = {"each part of a two-part question": (policy, False),
             "redundancy penalty": (replace(policy, redundancy_penalty=0.0), True),
             "a higher share outside the leading section": (
                 replace(policy, keep_share_elsewhere=policy.keep_share), True)}
    for name, (changed, parts) in steps.items():
        rows.append({"removed": f"learned step: {name}",
                     **figures(validation, learned_choice(scores, changed, parts)).to_json()})
    return rows


def ablation_markdown(rows: list[dict]) -> str:
    lines = ["| removed | nugget recall | complete answers | words |", "|---|---|---|---|"]
    lines += [f"| {r['removed']} | {r['nugget_recall']:.3f} | {r['complete']:.1%} | {r['words']:.0f} |"
              for r in rows]
    return "\n".join(lines)


# --- The whole run ---------------------------------------------------------------------------


def train_scorer(settings: Settings, config: ScorerConfig, policy: EvidencePolicy) -> dict:
    """Mine, fit, choose on validation, and replace the shipped scorer; its manifest."""
    from ftchat.models.weights import resolve_embedder

    started = time.time()
    rows = load_questions(config.questions_file)
    train, validation = mine_all(settings, config, rows, policy)
    log.info("Mined %d units of %d questions", sum(len(m.features) for m in train), len(train))
    scorer, strength, choice, report = choose(train, validation, policy, config.strengths)
    chosen_policy = replace(policy, **choice)
    if config.ablation:
        report["ablation"] = ablation(train, validation, chosen_policy, scorer, strength)
    embedder_file = Path(resolve_embedder(settings.embedder)) / "model.safetensors"
    manifest = {
        "base": {"embedder": settings.embedder,
                 "embedder_sha256": sha256_file(embedder_file) if embedder_file.is_file() else None,
                 "what": "logistic regression over units' signals and the question's kind (unit_scorer.py)"},
        "data": {"file": config.questions_file.name, "sha256": sha256_file(config.questions_file),
                 "questions": len(train), "units": int(sum(len(m.features) for m in train)),
                 "positives": int(sum(m.labels.sum() for m in train))},
        "settings": {"strength": strength, "strengths": list(config.strengths), "grid": CHOICE_GRID},
        "choice": choice, "validation": report, "machine": _machine(),
        "seconds": round(time.time() - started, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shipped = replace(scorer, manifest=manifest).to_json()
    write_text_atomically(config.output_file, json.dumps(shipped, indent=1) + "\n")
    return shipped["manifest"]
