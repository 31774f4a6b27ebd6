"""One settings object, read from the environment once and passed down explicitly."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

# The repository root when running from a checkout (editable install); the corpus and
# the default index live there so `make run` works from any working directory.
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent.parent
# An installed package (`pip install .`) is not in a checkout: it carries the guide as
# package data (ftchat/guide/, mapped from corpus/ in pyproject.toml) and keeps its index
# in the user's data folder, since site-packages is no place to write.
IN_CHECKOUT = PACKAGE_DIR.parent.name == "src" and (REPO_ROOT / "pyproject.toml").is_file()
SHIPPED_CORPUS = PACKAGE_DIR / "guide"


def default_corpus_dir() -> Path:
    return REPO_ROOT / "corpus" if IN_CHECKOUT else SHIPPED_CORPUS


def default_questions_file() -> Path:
    """The guide's sample questions (questions.py): train/ in a checkout, packaged otherwise."""
    return (REPO_ROOT / "train" if IN_CHECKOUT else PACKAGE_DIR / "train") / "questions.jsonl"


def default_index_dir() -> Path:
    if IN_CHECKOUT:
        return REPO_ROOT / "index"
    data_home = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says to ignore a relative XDG_DATA_HOME.
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "ftchat" / "index"

def default_progress_file() -> Path:
    """The quiz's progress database: beside the index when installed (the user's data
    folder), in the checkout's data/ folder otherwise (gitignored)."""
    return REPO_ROOT / "data" / "progress.db" if IN_CHECKOUT else default_index_dir().parent / "progress.db"


DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_MODEL = "smollm2-135m"


def _default_dir(env: str, fallback: Path) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser() if value else fallback


class SettingsError(ValueError):
    """An FTCHAT_* environment variable holds a value ftchat cannot use."""


def _env_number(name: str, default: str, kind: type, low: float, high: float | None = None):
    raw = os.environ.get(name, "").strip() or default
    try:
        value = kind(raw)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {noun}, got {raw!r}") from None
    if not value >= low or (high is not None and not value <= high):  # NaN fails too
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise SettingsError(f"{name} must be {bounds}, got {raw!r}")
    return value


def parse_auth(value: str) -> tuple[str, str]:
    """"user:password" (from --auth or FTCHAT_AUTH) as a (user, password) pair."""
    user, _, password = (value or "").partition(":")
    if not user.strip() or not password:
        raise SettingsError("credentials must look like user:password (both parts non-empty)")
    return user.strip(), password


def _env_auth() -> tuple[str, str] | None:
    value = os.environ.get("FTCHAT_AUTH", "")
    try:
        return parse_auth(value) if value else None
    except SettingsError as exc:
        raise SettingsError(f"FTCHAT_AUTH: {exc}") from None


DTYPES = ("float32", "bfloat16", "int4", "int8")
_DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "qint8": "int8", "q4": "int4"}
DECODERS = ("auto", "transformers")


def checked_dtype(value: str) -> str:
    """The dtype setting in its canonical spelling ("auto" stays "auto")."""
    value = (value or "auto").strip().lower()
    value = _DTYPE_ALIASES.get(value, value)
    if value != "auto" and value not in DTYPES:
        raise SettingsError(f"Unknown dtype '{value}'; choose auto, {', '.join(DTYPES)} (FTCHAT_DTYPE)")
    return value


def _checked_decoder(value: str) -> str:
    value = (value or "auto").strip().lower()
    if value not in DECODERS:
        raise SettingsError(f"Unknown decoder '{value}'; choose {' or '.join(DECODERS)} (FTCHAT_DECODER)")
    return value


# The gate's fitted threshold (`make calibrate`), beside the gate it sets.
GATE_FILE = PACKAGE_DIR / "answering" / "gate.json"
# LoRA adapters (models/adapters.py), inside the package so that an installed ftchat carries them.
ADAPTERS_DIR = PACKAGE_DIR / "models" / "lora_adapters"
# The learned ranker's weights (answering/rerank.py), beside the module; `make train-ranker` writes them.
RANKER_FILE = PACKAGE_DIR / "answering" / "ranker.json"
# The learned unit scorer (answering/unit_scorer.py), beside the module; `make train-scorer` writes it.
UNIT_SCORER_FILE = PACKAGE_DIR / "answering" / "unit_scorer.json"


def _calibrated_threshold() -> float:
    try:
        return float(json.loads(GATE_FILE.read_text(encoding="utf-8"))["threshold"])
    except (OSError, ValueError, KeyError):
        return 0.35  # used only until the first calibration has been committed


def _learned_threshold() -> float | None:
    """The gate's threshold on the learned ranker's probability when `ftchat calibrate --save`
    chose it over the cosine (gate.json's "measure"), else None: the cosine decides."""
    try:
        fitted = json.loads(GATE_FILE.read_text(encoding="utf-8"))
        return float(fitted["learned"]["threshold"]) if fitted.get("measure") == "learned" else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _env_trained_file(name: str, shipped: Path) -> Path | None:
    """A trained part that is off unless asked for: "on" for the shipped file, a file of
    one's own, or "off" (also when unset)."""
    value = os.environ.get(name, "").strip()
    if value.lower() in ("", "off", "none", "0", "false"):
        return None
    return shipped if value.lower() in ("on", "1", "true") else Path(value).expanduser()


def _env_ranker() -> Path | None:
    """FTCHAT_RANKER: "on" for the shipped ranker, a ranker file, or "off" (the default).

    Off by default: on 2026-12-07 it gained 2.3 points of recall@1 on train/'s validation
    split but lost 0.8-7.5 on the eval sets, and a blind judge found the right section in
    75% of its answers against 80% without it (docs/ranker.md)."""
    return _env_trained_file("FTCHAT_RANKER", RANKER_FILE)


def _env_scorer() -> Path | None:
    """FTCHAT_SCORER: "on" for the shipped unit scorer, a scorer file, or "off" (the
    default) for the hand rules (answering/unit_scorer.py).

    Off by default: on 2026-12-08 it tied the hand rules on train/'s validation split and
    raised nugget recall on the eval sets (0.626 to 0.668 on blind.jsonl), but a blind judge
    found 30 of 60 of its answers good against 35 of 60 with the hand rules, its sentences
    less readable (docs/evaluation.md)."""
    return _env_trained_file("FTCHAT_SCORER", UNIT_SCORER_FILE)


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = field(default_factory=lambda: _default_dir("FTCHAT_CORPUS_DIR", default_corpus_dir()))
    index_dir: Path = field(default_factory=lambda: _default_dir("FTCHAT_INDEX_DIR", default_index_dir()))
    # Questions people ask about the guide's sections, indexed beside its text (questions.py).
    questions_file: Path = field(
        default_factory=lambda: _default_dir("FTCHAT_QUESTIONS_FILE", default_questions_file())
    )
    cache_dir: Path = field(
        default_factory=lambda: _default_dir("FTCHAT_CACHE_DIR", Path.home() / ".cache" / "ftchat")
    )
    # Every quiz attempt and each learner's schedule (study/progress.py), in one SQLite file.
    progress_file: Path = field(
        default_factory=lambda: _default_dir("FTCHAT_PROGRESS_FILE", default_progress_file())
    )
    embedder: str = field(default_factory=lambda: os.environ.get("FTCHAT_EMBEDDER", DEFAULT_EMBEDDER))
    model: str = field(default_factory=lambda: os.environ.get("FTCHAT_MODEL", DEFAULT_MODEL))
    host: str = field(default_factory=lambda: os.environ.get("FTCHAT_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _env_number("FTCHAT_PORT", "7860", int, 0, 65535))
    # (user, password) the page and its API require, from FTCHAT_AUTH=user:password; None: open.
    auth: tuple[str, str] | None = field(default_factory=_env_auth)

    # Chunking: all-MiniLM-L6-v2 reads 256 word pieces; ~170 words plus the heading path fits.
    chunk_max_words: int = 170
    # Retrieval: candidates taken from each ranker before fusion, and the weight of the
    # cosine similarity against BM25 (scaled to 0..1) in the fused score.
    candidates: int = 30
    dense_weight: float = field(
        default_factory=lambda: _env_number("FTCHAT_DENSE_WEIGHT", "0.7", float, 0.0, 1.0)
    )
    # How near a section counts through its sample questions: its cosine to the question is
    # the larger of its text's and asked_weight x its nearest sample question's.
    asked_weight: float = field(
        default_factory=lambda: _env_number("FTCHAT_ASKED_WEIGHT", "0.8", float, 0.0, 1.0)
    )
    top_k: int = 5
    # Answers: tokens the model may write, and the gate's threshold on the best passage's
    # cosine similarity (fitted on all three eval sets by `make calibrate`).
    max_new_tokens: int = field(default_factory=lambda: _env_number("FTCHAT_MAX_TOKENS", "96", int, 1))
    gate_threshold: float = field(default_factory=lambda: _calibrated_threshold())
    # The learned ranker's file (None: off), and the gate's threshold on its probability,
    # fitted on train/questions.jsonl by `ftchat calibrate --save` (None: the cosine decides).
    ranker_file: Path | None = field(default_factory=_env_ranker)
    learned_gate_threshold: float | None = field(default_factory=lambda: _learned_threshold())
    # The learned unit scorer's file, which then chooses the evidence sentences (None, the
    # default: the hand rules).
    unit_scorer_file: Path | None = field(default_factory=_env_scorer)
    # Questions longer than this are cut before retrieval; the embedder reads far less anyway.
    max_question_chars: int = 2000
    # Generator speed: weight dtype ("auto" = bfloat16 where the CPU runs it natively, else
    # int4, else float32; or "float32", "bfloat16", "int4", "int8") and torch threads (0 =
    # torch's default, one per physical core). `ftchat bench` shows what was chosen.
    dtype: str = field(default_factory=lambda: os.environ.get("FTCHAT_DTYPE", "auto"))
    threads: int = field(default_factory=lambda: _env_number("FTCHAT_THREADS", "0", int, 0))
    # Decoding loop: "auto" = ftchat's own for Llama-architecture models (llama.py, about
    # twice transformers' speed here), transformers' generate() for the rest; "transformers"
    # forces generate().
    decoder: str = field(default_factory=lambda: os.environ.get("FTCHAT_DECODER", "auto"))
    # Where a preset's LoRA adapter folder is found (and `ftchat train` writes it).
    adapters_dir: Path = ADAPTERS_DIR

    def __post_init__(self) -> None:
        # Validated here, whether the value came from the environment or from code, so a
        # bad one fails once with the variable's name instead of deep inside a model load.
        object.__setattr__(self, "dtype", checked_dtype(self.dtype))
        object.__setattr__(self, "decoder", _checked_decoder(self.decoder))
        if not isinstance(self.threads, int) or self.threads < 0:
            raise SettingsError(f"FTCHAT_THREADS must be at least 0, got {self.threads!r}")

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def child_environment(self, **extra: str) -> dict[str, str]:
        """The environment in which a child process (an `ftchat` command, the page) reads
        these same settings: this process's environment without its FTCHAT_* variables, one
        FTCHAT_* variable for each setting read from the environment (but for the page's
        host, port and credentials, which the caller decides), model hubs offline, then
        `extra` (any variable, set last)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTCHAT_")}
        env.update(
            FTCHAT_CORPUS_DIR=str(self.corpus_dir),
            FTCHAT_INDEX_DIR=str(self.index_dir),
            FTCHAT_QUESTIONS_FILE=str(self.questions_file),
            FTCHAT_CACHE_DIR=str(self.cache_dir),
            FTCHAT_PROGRESS_FILE=str(self.progress_file),
            FTCHAT_EMBEDDER=self.embedder,
            FTCHAT_MODEL=self.model,
            FTCHAT_DENSE_WEIGHT=str(self.dense_weight),
            FTCHAT_ASKED_WEIGHT=str(self.asked_weight),
            FTCHAT_MAX_TOKENS=str(self.max_new_tokens),
            FTCHAT_DTYPE=self.dtype,
            FTCHAT_THREADS=str(self.threads),
            FTCHAT_DECODER=self.decoder,
            FTCHAT_RANKER=str(self.ranker_file) if self.ranker_file else "off",
            FTCHAT_SCORER=str(self.unit_scorer_file) if self.unit_scorer_file else "off",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        env.update(extra)
        return env
