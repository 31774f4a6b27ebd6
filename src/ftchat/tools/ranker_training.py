"""Training the learned ranker (answering/rerank.py) on the guide's own questions:
`make train-ranker`; `ftchat calibrate` fits the gate's thresholds on the same questions.

The data is train/questions.jsonl. For each in-scope question of its train split, ftchat's
own hybrid retrieval gives its best `depth` passages, and each becomes a row of the
ranker's features (rerank.FEATURES) labelled by whether it is one of the question's
sections. A question's own sample-question vector would put its section first, so the
questions are mined in two folds, each against an index whose sample questions are the
other fold's. One question in five is mined as if its sections had no sample questions,
as a document added on the page has none, so that the ranker learns to do without them.

A logistic regression (scikit-learn) is fitted on the standardized rows; its strength and
the depth it reorders are chosen on the validation split, against an index whose sample
questions are the train split's. The eval sets take no part. Mined rows are kept in the
cache's ranker-training/ folder per fold, so an interrupted run resumes after the folds
it finished; the result replaces answering/ranker.json in one rename.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ftchat.answering.rerank import FEATURES, VOTERS, LearnedRanker
from ftchat.config import RANKER_FILE, Settings, default_questions_file
from ftchat.files import read_objects, sha256_file, write_text_atomically
from ftchat.index.store import Index, open_index

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
# The feature columns that come from sample questions, zeroed for the questions mined as
# if their sections had none.
_ASKED_COLUMNS = [FEATURES.index(f) for f in ("asked", "asked_gap", "asked_votes")]


class RankerDataError(ValueError):
    """A training row that cannot be used; names the file and line."""


@dataclass(frozen=True)
class TrainingQuestion:
    question: str
    sections: tuple[str, ...]  # empty for an out-of-scope question
    split: str
    nuggets: tuple[tuple[str, ...], ...] = ()  # the facts a good answer states, each with its wordings

    @property
    def answerable(self) -> bool:
        return bool(self.sections)


@dataclass(frozen=True)
class RankerConfig:
    depths: tuple[int, ...] = (10, 20)  # passages it may reorder; validation chooses
    strengths: tuple[float, ...] = (0.1, 1.0, 10.0)  # inverse regularization C; validation chooses
    without_asked_every: int = 5  # one question in five mined as if it had no sample questions
    questions_file: Path = field(default_factory=default_questions_file)
    output_file: Path = RANKER_FILE
    work_dir: Path | None = None  # mined rows and fold indexes; default: the cache's ranker-training/
    progress_bar: bool = True

    def with_overrides(self, **changes: object) -> RankerConfig:
        from dataclasses import replace

        return replace(self, **{k: v for k, v in changes.items() if v is not None})


# --- Data ------------------------------------------------------------------------------


def load_questions(path: Path) -> list[TrainingQuestion]:
    """Every row of a training file; the first bad row stops it with its file and line."""
    rows = []
    for where, value in read_objects(path, RankerDataError, "training questions: see docs/ranker.md"):
        question = value.get("question")
        if not isinstance(question, str) or not question.strip():
            raise RankerDataError(f'{where}: a row needs a non-empty "question" string')
        if value.get("split") not in SPLITS:
            raise RankerDataError(f'{where}: "split" must be one of {", ".join(SPLITS)}')
        sections = value.get("sections", [])
        answerable = value.get("answerable", True)
        if not isinstance(sections, list) or not all(isinstance(s, str) and s for s in sections):
            raise RankerDataError(f'{where}: "sections" must be a list of section titles')
        if answerable and not sections:
            raise RankerDataError(f'{where}: an in-scope row names its sections in "sections"')
        nuggets = value.get("nuggets", [])
        if not isinstance(nuggets, list) or not all(
                isinstance(n, list) and n and all(isinstance(a, str) and a for a in n) for n in nuggets):
            raise RankerDataError(f'{where}: "nuggets" must be a list of non-empty lists of wordings')
        rows.append(TrainingQuestion(" ".join(question.split()), tuple(sections) if answerable else (),
                                     value["split"], tuple(tuple(n) for n in nuggets)))
    if not rows:
        raise RankerDataError(f"{path} has no training rows")
    return rows


def _index_with_questions(settings: Settings, folder: Path, rows: list[TrainingQuestion]) -> Index:
    """The guide's index with these rows as its sample questions (questions.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    questions = folder / "questions.jsonl"
    with questions.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"question": row.question, "sections": list(row.sections)}) + "\n")
    return open_index(settings.with_overrides(index_dir=folder / "index", questions_file=questions))


def _work_dir(settings: Settings, config: RankerConfig) -> Path:
    return config.work_dir or settings.cache_dir / "ranker-training"


def _validation_index(settings: Settings, work_dir: Path, rows: list[TrainingQuestion]) -> Index:
    """The index validation and the gate's fit retrieve from: the train split's in-scope
    questions as its sample questions, so no validation question finds itself."""
    return _index_with_questions(settings, work_dir / "validation",
                                 [r for r in rows if r.split == "train" and r.answerable])


def _retriever(settings: Settings, index: Index, ranker=None):
    from ftchat.answering.retrieval import Retriever
    from ftchat.models.loader import get_embedder

    return Retriever(index, get_embedder(settings.embedder), settings, ranker=ranker)


@dataclass
class Mined:
    """Feature rows of the questions' candidates, with labels and the question each is of."""

    rows: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    ranks: np.ndarray  # the hybrid rank of each candidate, 1-based

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, rows=self.rows, labels=self.labels, groups=self.groups, ranks=self.ranks)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> Mined:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["rows"], data["labels"], data["groups"], data["ranks"])


def mine(rows: list[TrainingQuestion], retriever, depth: int, without_asked_every: int = 0,
         progress: bool = False) -> Mined:
    """Each in-scope question's best `depth` hybrid passages as feature rows."""
    from tqdm.auto import tqdm

    from ftchat.answering.retrieval import clean_question

    features, labels, groups, ranks = [], [], [], []
    questions = [r for r in rows if r.answerable]
    for number, row in enumerate(tqdm(questions, desc="Mining", unit="question", disable=not progress)):
        query = clean_question(row.question, retriever.settings)
        vector = retriever.embedder.encode([query])[0]
        passages = retriever.ranked(query, depth, vector)
        block = retriever.ranking_features(query, vector, passages)
        if without_asked_every and number % without_asked_every == 0:
            block[:, _ASKED_COLUMNS] = 0.0
        features.append(block)
        labels += [p.chunk.title in row.sections for p in passages]
        groups += [number] * len(passages)
        ranks += [p.rank for p in passages]
    return Mined(np.vstack(features), np.asarray(labels), np.asarray(groups), np.asarray(ranks))


def training_rows(rows: list[TrainingQuestion], settings: Settings, config: RankerConfig,
                  work_dir: Path, data_sha: str) -> Mined:
    """The train split mined in two folds (see the module's docstring); a fold mined
    before with the same data is read back."""
    train = [r for r in rows if r.split == "train"]
    folds = []
    for fold in range(2):
        saved = work_dir / f"mined-{data_sha[:12]}-{max(config.depths)}-fold-{fold}.npz"
        if saved.is_file():
            log.info("Fold %d: mined rows read back from %s", fold, saved)
            folds.append(Mined.load(saved))
            continue
        mined = [r for i, r in enumerate(train) if i % 2 == fold]
        helpers = [r for i, r in enumerate(train) if i % 2 != fold and r.answerable]
        index = _index_with_questions(settings, work_dir / f"fold-{fold}", helpers)
        result = mine(mined, _retriever(settings, index), max(config.depths), config.without_asked_every,
                      config.progress_bar)
        result.groups += fold * len(train)
        result.save(saved)
        folds.append(result)
    return Mined(*(np.concatenate([getattr(f, k) for f in folds])
                   for k in ("rows", "labels", "groups", "ranks")))


# --- Fitting and choosing ------------------------------------------------------------


def fit(mined: Mined, depth: int, strength: float) -> LearnedRanker:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    keep = mined.ranks <= depth
    scaler = StandardScaler().fit(mined.rows[keep])
    model = LogisticRegression(C=strength, max_iter=5000).fit(scaler.transform(mined.rows[keep]),
                                                              mined.labels[keep])
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return LearnedRanker(model.coef_[0].astype(np.float64), float(model.intercept_[0]),
                         scaler.mean_.astype(np.float64), scale.astype(np.float64), depth, {})


def recall(mined: Mined, scores: np.ndarray | None, depth: int) -> tuple[float, float]:
    """Recall@1 and @5 over the mined questions: by `scores` within the top `depth` (the
    hybrid order below it), or by the hybrid order alone (scores None)."""
    first, top5 = [], []
    for group in np.unique(mined.groups):
        at = np.flatnonzero(mined.groups == group)
        order = at[np.argsort(mined.ranks[at])]
        if scores is not None:
            head = order[mined.ranks[order] <= depth]
            order = np.concatenate([head[np.argsort(-scores[head], kind="stable")], order[len(head):]])
        first.append(bool(mined.labels[order[0]]))
        top5.append(bool(mined.labels[order[:5]].any()))
    return round(statistics.fmean(first), 4), round(statistics.fmean(top5), 4)


def choose(train: Mined, validation: Mined, config: RankerConfig) -> tuple[LearnedRanker, float, dict]:
    """The (depth, strength) with the best validation recall@1, then @5, then the shallower
    and the more regularized; every candidate's figures."""
    tried = {}
    for depth in config.depths:
        for strength in config.strengths:
            ranker = fit(train, depth, strength)
            tried[(depth, strength)] = (ranker, recall(validation, ranker.logits(validation.rows), depth))
    best = max(tried, key=lambda k: (tried[k][1], -k[0], -k[1]))
    hybrid = recall(validation, None, 0)
    report = {
        "questions": int(len(np.unique(validation.groups))),
        "hybrid_recall_at_1": hybrid[0], "hybrid_recall_at_5": hybrid[1],
        "recall_at_1": tried[best][1][0], "recall_at_5": tried[best][1][1],
        "tried": [{"depth": d, "strength": c, "recall_at_1": r[0], "recall_at_5": r[1]}
                  for (d, c), (_, r) in tried.items()],
    }
    return tried[best][0], best[1], report


# --- The whole run ---------------------------------------------------------------------


def _machine() -> dict:
    import sklearn

    from ftchat.models.cpu import cpu_model

    return {"cpu": cpu_model(), "platform": platform.platform(), "python": platform.python_version(),
            "scikit_learn": sklearn.__version__}


def train_ranker(settings: Settings, config: RankerConfig) -> dict:
    """Mine, fit, choose on validation, and replace the shipped ranker; its manifest."""
    from ftchat.models.weights import resolve_embedder

    started = time.time()
    work_dir = _work_dir(settings, config)
    rows = load_questions(config.questions_file)
    data_sha = sha256_file(config.questions_file)
    train = training_rows(rows, settings, config, work_dir, data_sha)
    log.info("Mined %d candidates of %d questions", len(train.rows), len(np.unique(train.groups)))
    index = _validation_index(settings, work_dir, rows)
    validation = mine([r for r in rows if r.split == "validation"], _retriever(settings, index),
                      max(config.depths), progress=config.progress_bar)
    ranker, strength, report = choose(train, validation, config)
    embedder_file = Path(resolve_embedder(settings.embedder)) / "model.safetensors"
    manifest = {
        "base": {"embedder": settings.embedder,
                 "embedder_sha256": sha256_file(embedder_file) if embedder_file.is_file() else None,
                 "what": "logistic regression over the hybrid retrieval's scores (rerank.py)"},
        "data": {"file": config.questions_file.name, "sha256": data_sha,
                 "questions": int(len(np.unique(train.groups))), "candidates": int(len(train.rows))},
        "settings": {"depth": ranker.depth, "strength": strength, "voters": VOTERS,
                     "without_asked_every": config.without_asked_every},
        "validation": report, "machine": _machine(),
        "seconds": round(time.time() - started, 1),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    shipped = LearnedRanker(ranker.coefficients, ranker.intercept, ranker.mean, ranker.scale,
                            ranker.depth, manifest).to_json()
    write_text_atomically(config.output_file, json.dumps(shipped, indent=2) + "\n")
    return shipped["manifest"]


# --- The gate's thresholds -------------------------------------------------------------


def _gate_scores(retriever, rows: list[TrainingQuestion], learned: bool,
                 settings: Settings) -> list[tuple[float, bool]]:
    from ftchat.answering import gate
    from ftchat.answering.retrieval import clean_question

    scores = []
    for row in rows:
        query = clean_question(row.question, settings)
        passages = retriever.ranked(query, settings.top_k)
        # A threshold of 0.0 only makes decide() report the score it would compare.
        decision = gate.decide(passages, question=row.question, query=query,
                               keyword=retriever.index.keyword, threshold=0.0,
                               learned_threshold=0.0 if learned else None)
        scores.append((decision.score, row.answerable))
    return scores


def fit_gate(settings: Settings, config: RankerConfig) -> dict:
    """Both of the gate's thresholds, fitted on train/ and never on an eval set: the cosine
    one (used when the ranker is off or missing) on every row of train/questions.jsonl,
    since nothing was trained on them; the learned one on the rows the ranker never saw,
    its validation split and the out-of-scope rows (its scores of the train split's
    in-scope questions are its own training data). Each with its 5-fold cross-validated
    accuracy. Retrieval reads an index whose sample questions are the train split's in-scope
    questions, none of which is scored by the learned fit."""
    from ftchat.answering import gate
    from ftchat.answering.policy import GATE
    from ftchat.answering.rerank import load_ranker

    rows = load_questions(config.questions_file)
    index = _validation_index(settings, _work_dir(settings, config), rows)
    cosine = _gate_scores(_retriever(settings, index), rows, learned=False, settings=settings)
    target = GATE.answered_at_least
    result = {**gate.calibrate(cosine, target), "calibrated_on": [f"{config.questions_file.name} (all rows)"],
              "cross_validated": gate.cross_validate(cosine, answered_at_least=target)}
    ranker = load_ranker(settings.ranker_file) if settings.ranker_file else None
    if ranker is not None:
        retriever = _retriever(settings, index, ranker)
        unseen = [r for r in rows if r.split == "validation" or not r.answerable]
        learned = _gate_scores(retriever, unseen, True, settings)
        result["learned"] = {
            **gate.calibrate(learned, target),
            "calibrated_on": [f"{config.questions_file.name} (validation split and out-of-scope rows)"],
            "cross_validated": gate.cross_validate(learned, answered_at_least=target),
            "ranker_sha256": ranker.manifest["weights_sha256"],
        }
    # The gate reads whichever declines more out-of-scope questions on rows it was not
    # fitted on, both answering the same share of in-scope ones.
    learned_cv = result.get("learned", {}).get("cross_validated", {}).get("out_of_scope_accuracy", -1)
    cosine_cv = result["cross_validated"]["out_of_scope_accuracy"]
    result["measure"] = "learned" if learned_cv > cosine_cv else "cosine"
    return result
