"""Timings taken in this process: retrieval, decoding, whole answers, next-token agreement
with float32, and index builds. Every figure is a median (and p95 where it is a
distribution) over repeated runs after a warm-up."""

from __future__ import annotations

import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ftchat.config import Settings
from ftchat.tools.stats import percentile

# Typical in-scope questions (one per topic), and a few more for retrieval timing.
ANSWER_QUESTIONS = [
    "What is LoRA?",
    "how do I balance a dataset with a rare class?",
    "What does gradient accumulation do?",
    "How does QLoRA save memory?",
    "What is catastrophic forgetting?",
]
TWO_PART_QUESTION = "What is catastrophic forgetting and how do I avoid it?"
RETRIEVAL_QUESTIONS = ANSWER_QUESTIONS + [
    "What is GPTQ?",
    "How should I pick a learning rate schedule?",
    "what is knowledge distillation",
    "Explain elastic weight consolidation",
    "What is the capital of France?",
    "how big should the validation set be",
    "What is DPO and how does it differ from RLHF?",
]
DECODE_TOKENS = 48


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def p50(values: list[float]) -> float:
    return percentile(values, 50)


def p95(values: list[float]) -> float:
    return percentile(values, 95)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


# --- Retrieval ----------------------------------------------------------------------------


def bench_retrieval(assistant, repeats: int) -> dict:
    """Retrieval with the learned ranker (the assistant's, else the shipped one), the hybrid
    order alone (the same index without it) and plain FAISS, question by question in turn so
    that all three meet the same machine."""
    from ftchat.answering.rerank import load_ranker
    from ftchat.answering.retrieval import Retriever

    embedder = assistant.retriever.embedder
    index = assistant.retriever.index
    ranker = assistant.retriever.ranker or load_ranker()
    learned = Retriever(index, embedder, assistant.settings, ranker)
    hybrid_only = Retriever(index, embedder, assistant.settings, ranker=None)
    for q in RETRIEVAL_QUESTIONS[:3]:  # warm-up
        learned.search(q)
        hybrid_only.search(q)
    full, hybrid, dense = [], [], []
    for _ in range(repeats):
        for q in RETRIEVAL_QUESTIONS:
            for timings, search in ((full, learned.search), (hybrid, hybrid_only.search),
                                    (dense, lambda q: index.vectors.search(embedder.encode([q]), 5))):
                started = time.perf_counter()
                search(q)
                timings.append((time.perf_counter() - started) * 1000)
    return {
        "retrieval_ms_p50": p50(full),
        "retrieval_ms_p95": p95(full),
        "learned_ranker": ranker is not None,
        "hybrid_retrieval_ms_p50": p50(hybrid),
        "hybrid_retrieval_ms_p95": p95(hybrid),
        "learned_ranking_ms_p50": p50(full) - p50(hybrid),
        "baseline_dense_retrieval_ms_p50": p50(dense),
        "baseline_dense_retrieval_ms_p95": p95(dense),
    }


def bench_grading(assistant, repeats: int, count: int = 20) -> dict:
    """The quiz grading one learner answer (tutor.grade without saving), on questions whose
    answer key is built inside the timing, as a learner's first answer to a question is.
    The answers are the first 25 words of each question's guide answer, reworded by nothing:
    the cost is the embedder's, whatever the words."""
    tutor = assistant.tutor()
    tutor.grade(tutor.deck.questions[0].id, "warm up the embedder")
    questions = tutor.deck.pick(count=count * repeats + 1, seed=11)[1:]
    timings = []
    for q in questions:
        text = " ".join(q.question.split()[:6]) + " means " + " ".join(w for n in q.nuggets for w in n[:1])
        started = time.perf_counter()
        tutor.grade(q.id, text)
        timings.append((time.perf_counter() - started) * 1000)
    return {"quiz_grading_ms_p50": p50(timings), "quiz_grading_ms_p95": p95(timings),
            "quiz_grading_answers": len(timings)}


def bench_evidence(assistant, repeats: int) -> dict:
    """Choosing a question's evidence from its retrieved passages: with the learned unit
    scorer (as answers are built) and with the hand rules, on the same passages, so the
    difference is what scoring adds to a question (the shipped scorer, whether or not
    FTCHAT_SCORER turns it on). A question of two parts embeds each part."""
    from ftchat.answering.evidence import select_evidence
    from ftchat.answering.unit_scorer import load_unit_scorer

    embedder, idf = assistant.retriever.embedder, assistant.index.keyword.idf
    scorer = assistant.unit_scorer or load_unit_scorer()
    policy = assistant.evidence_policy
    asked = [*RETRIEVAL_QUESTIONS, TWO_PART_QUESTION]
    questions = [(q, assistant.retriever.search(q)) for q in asked]
    learned_policy = policy.with_choice(scorer.choice) if scorer else policy
    ways = {"learned": (scorer, learned_policy), "rules": (None, policy)}
    timings: dict[str, list[float]] = {name: [] for name in ways}
    for number in range(repeats + 1):  # the first round is a warm-up
        for question, passages in questions:
            for name, (way_scorer, way_policy) in ways.items():
                started = time.perf_counter()
                select_evidence(question, passages, embedder, term_weight=idf, asked=question,
                                policy=way_policy, scorer=way_scorer)
                if number:
                    timings[name].append((time.perf_counter() - started) * 1000)
    return {"evidence_ms_p50": p50(timings["learned"]), "evidence_ms_p95": p95(timings["learned"]),
            "evidence_rules_ms_p50": p50(timings["rules"]), "unit_scorer": scorer is not None,
            "unit_scoring_ms_p50": p50(timings["learned"]) - p50(timings["rules"])}


# --- Answers and decoding -----------------------------------------------------------------


def bench_answers(assistant, questions: list[str], repeats: int) -> dict:
    assistant.ask(questions[0])  # warm-up (model loaded before)
    first, total, modes, tokens = [], [], [], []
    for _ in range(repeats):
        for q in questions:
            answer = assistant.ask(q)
            first.append(answer.timings["first_token_ms"])
            total.append(answer.timings["total_ms"])
            modes.append(answer.mode)
            tokens.append(answer.tokens)
    return {
        "first_token_ms_p50": p50(first),
        "first_token_ms_p95": p95(first),
        "answer_ms_p50": p50(total),
        "answer_ms_p95": p95(total),
        "answer_tokens_p50": p50(tokens),
        "answer_modes": {m: modes.count(m) for m in sorted(set(modes))},
    }


def bench_decode(assistant, generator, repeats: int) -> dict:
    """Prefill and decode speed of the generator on a real answer prompt, greedy, fixed length.

    Prefill is timed to the first token (the whole prompt read, one token chosen); decoding
    is every token after it."""
    from ftchat.answering.prompt import build_messages

    question = ANSWER_QUESTIONS[0]
    evidence = assistant.evidence(question)
    prompt = generator.prompt_tokens(build_messages(question, evidence))
    prefill, decode = [], []
    for _ in range(repeats + 1):  # the first run is a warm-up
        if forget := getattr(generator.decoder, "forget_prompt", None):
            forget()  # else the same prompt again is read from its kept keys and values
        started = time.perf_counter()
        first_s = None
        produced = 0
        for _token in generator.tokens(prompt, DECODE_TOKENS, to_the_limit=True):
            produced += 1
            if first_s is None:
                first_s = time.perf_counter() - started
        total_s = time.perf_counter() - started
        prefill.append(len(prompt) / first_s)
        decode.append((produced - 1) / max(total_s - first_s, 1e-6))
    return {
        "prompt_tokens": len(prompt),
        "prefill_tokens_per_s": p50(prefill[1:]),
        "decode_tokens_per_s": p50(decode[1:]),
        "weight_bytes": generator.weight_bytes(),
        "decoder": generator.backend,
    }


def agreement_questions(settings: Settings, count: int) -> list[str]:
    """`count` in-scope questions from the training questions, spread over the guide (the
    eval sets judge answers; this only compares two decoders on the same prompts)."""
    from ftchat.documents.questions import load_sample_questions

    questions, _ = load_sample_questions(settings.questions_file)
    step = max(len(questions) // max(count, 1), 1)
    return [q.question for q in questions[::step][:count]]


def bench_agreement(assistant, generator, reference, questions: list[str]) -> dict:
    """Teacher-forced next-token agreement of `generator` with `reference` (float32) on answer
    prompts: the reference writes each answer (greedy, up to DECODE_TOKENS), then both read
    prompt and answer at once and pick their most likely token at every answer position.
    Counting there, not on two free runs, keeps one early difference from counting twice."""
    from ftchat.answering.prompt import build_messages

    if not all(hasattr(d, "choices") for d in (generator.decoder, reference.decoder)):
        return {"agreement_prompts": 0, "agreement_with_float32": None}
    same = total = 0
    for question in questions:
        prompt = reference.prompt_tokens(build_messages(question, assistant.evidence(question)))
        written = list(reference.tokens(prompt, DECODE_TOKENS))
        if not written:
            continue
        sequence = prompt + written
        picks = [generator.decoder.choices(sequence), reference.decoder.choices(sequence)]
        answer_positions = range(len(prompt) - 1, len(sequence) - 1)
        same += sum(picks[0][i] == picks[1][i] for i in answer_positions)
        total += len(answer_positions)
    return {"agreement_prompts": len(questions), "agreement_tokens": total,
            "agreement_with_float32": same / total if total else None}


# --- Index builds ---------------------------------------------------------------------------


def bench_guide_index(settings: Settings, repeats: int) -> tuple[float, int]:
    """A first build of the guide's index: seconds (median), and how many texts it had to
    embed (the package ships the vectors of the bundled guide's own, index.shipped_vectors)."""
    from ftchat.index.store import open_index

    times, embedded = [], 0
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as tmp:
            started = time.perf_counter()
            index = open_index(replace(settings, index_dir=Path(tmp) / "index"), rebuild=True)
            times.append(time.perf_counter() - started)
            embedded = index.manifest["embedded"]
    return p50(times), embedded


def _generated_corpus(folder: Path, pages: int, source_texts: list[str]) -> None:
    """`pages` sections of ~150 words each, spread over files of 100 pages."""
    rng = random.Random(5)
    sentences = [s for t in source_texts for s in t.replace("\n", " ").split(". ") if len(s.split()) > 4]
    folder.mkdir(parents=True)
    for start in range(0, pages, 100):
        lines = [f"# Generated part {start // 100 + 1}\n"]
        for page in range(start, min(start + 100, pages)):
            body = []
            while sum(len(s.split()) for s in body) < 140:
                body.append(rng.choice(sentences).strip().rstrip(".") + ".")
            lines.append(f"## Page {page + 1}\n\n{' '.join(body)}\n")
        (folder / f"part-{start // 100 + 1:03d}.md").write_text("\n".join(lines), encoding="utf-8")


def bench_large_corpus(settings: Settings, embedder, pages: int, source_texts: list[str]) -> dict:
    from ftchat.documents.chunking import chunk_sections
    from ftchat.documents.corpus import load_sources
    from ftchat.index.store import open_index

    with tempfile.TemporaryDirectory(prefix="ftchat-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        _generated_corpus(corpus, pages, source_texts)
        big = replace(settings, corpus_dir=corpus, index_dir=Path(tmp) / "index")
        chunks = chunk_sections(load_sources([corpus]).sections, settings.chunk_max_words)
        texts = [c.embedding_text() for c in chunks]
        started = time.perf_counter()
        embedder.encode(texts)
        raw_s = time.perf_counter() - started
        started = time.perf_counter()
        built = open_index(big, rebuild=True)
        build_s = time.perf_counter() - started
    n = len(built)
    return {
        "large_corpus_pages": pages,
        "large_corpus_chunks": n,
        "large_index_build_s": build_s,
        "large_index_chunks_per_s": n / build_s,
        "embedder_raw_chunks_per_s": len(texts) / raw_s,
        "pipeline_overhead": build_s / raw_s - 1,
    }
