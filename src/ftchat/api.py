"""The Python API that the CLI and the page both use.

    from ftchat.api import Assistant
    assistant = Assistant()
    answer = assistant.ask("What is QLoRA?")
    assistant.contents()                                   # the guide's table of contents
    assistant.section(("Key concepts", "Training process", "Gradient accumulation"))
    for piece in assistant.stream("and how does it save memory?", history=["What is QLoRA?"]):
        ...  # str pieces of verified text, then the final Answer
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from ftchat.answering import answer as ans
from ftchat.answering import gate
from ftchat.answering.answer import AnswerMode
from ftchat.answering.conversation import condense, shown_sentences
from ftchat.answering.evidence import EvidenceSet, remember_unit_vectors, select_evidence, unit_texts
from ftchat.answering.gate import GateDecision
from ftchat.answering.policy import EVIDENCE
from ftchat.answering.prompt import build_messages
from ftchat.answering.rerank import load_ranker
from ftchat.answering.retrieval import Passage, Retriever, clean_question
from ftchat.answering.streamcheck import StreamCheck
from ftchat.answering.unit_scorer import load_unit_scorer
from ftchat.config import Settings
from ftchat.documents.book import Contents, Guide, GuideSection
from ftchat.documents.corpus import display_path, load_profile
from ftchat.index.store import Index, open_index
from ftchat.index.vectors import shipped_vectors, text_key
from ftchat.models.generation import GenerationConfig, Generator
from ftchat.models.loader import generator_is_loaded, get_embedder, get_generator
from ftchat.study.tutor import Tutor


class Assistant:
    """Answers questions from the indexed guide. Index and model are opened on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # The corpus's own words about itself (corpus.toml) join the evidence rules.
        profile = load_profile(self.settings.corpus_dir)
        self.evidence_policy = EVIDENCE.for_corpus(profile.about_section, profile.self_reference)
        # The learned unit scorer and the choice fitted with it, or None: the hand rules.
        scorer_file = self.settings.unit_scorer_file
        self.unit_scorer = load_unit_scorer(scorer_file) if scorer_file else None
        if self.unit_scorer is not None:
            self.evidence_policy = self.evidence_policy.with_choice(self.unit_scorer.choice)
        self._index: Index | None = None
        self._retriever: Retriever | None = None
        self._guide: tuple[Index, Guide] | None = None  # and the index it was read from
        self._tutor: tuple[Guide, Tutor] | None = None  # and the guide it quizzes on
        self._lock = threading.Lock()

    # Components, loaded lazily ---------------------------------------------------------

    @property
    def index(self) -> Index:
        with self._lock:
            if self._index is None:
                self._index = open_index(self.settings, progress=True)
                self._retriever = None
            return self._index

    @property
    def retriever(self) -> Retriever:
        index = self.index
        with self._lock:
            if self._retriever is None:
                embedder = get_embedder(self.settings.embedder)
                ranker = load_ranker(self.settings.ranker_file) if self.settings.ranker_file else None
                self._retriever = Retriever(index, embedder, self.settings, ranker)
                self._remember_shipped_sentences(index, embedder)
            return self._retriever

    @staticmethod
    def _remember_shipped_sentences(index: Index, embedder) -> None:
        """The package ships the vectors of the bundled guide's sentences: with them, choosing
        a first question's evidence embeds only the question (it took ~0.9 s of a cold
        `ftchat ask` on an AVX2 laptop). Sentences of other documents are embedded as before."""
        known = shipped_vectors(embedder.name)
        if known:
            texts = unit_texts(_whole_sections(index))
            embedder.remember({t: known[k] for t in texts if (k := text_key(t)) in known})

    def load_generator(self) -> Generator:
        """The generator the settings name, loaded now if it is not yet."""
        return get_generator(self.settings)

    def load_index(self) -> Index:
        """The index, opened (or built, when stale or missing) now if it is not yet."""
        return self.index

    def generator_loaded(self) -> bool:
        return generator_is_loaded(self.settings)

    def reload(self, index: Index) -> None:
        with self._lock:
            self._index, self._retriever = index, None

    def remember_guide_sentences(self) -> int:
        """Embed every indexed passage's sentences now (the page does it after warming up),
        so evidence for a new question is chosen without embedding any of them."""
        return remember_unit_vectors(_whole_sections(self.index), self.retriever.embedder)

    # The guide to browse ---------------------------------------------------------------

    def guide(self) -> Guide:
        """The contents and sections of the current index (no model or embedder needed)."""
        index = self.index
        with self._lock:
            if self._guide is None or self._guide[0] is not index:
                self._guide = (index, Guide(index.chunks, display_path(self.settings.corpus_dir)))
            return self._guide[1]

    def contents(self) -> Contents:
        return self.guide().contents

    def section(self, path: list[str] | tuple[str, ...], source: str | None = None) -> GuideSection:
        """A whole section by heading path; raises guide.SectionNotFound with a message."""
        return self.guide().section(path, source)

    # Study -----------------------------------------------------------------------------

    def tutor(self) -> Tutor:
        """The quiz over the guide (study/tutor.py), with the learner progress database."""
        guide = self.guide()
        embedder = self.retriever.embedder
        with self._lock:
            if self._tutor is None or self._tutor[0] is not guide:
                s = self.settings
                self._tutor = (guide, Tutor(guide, embedder, s.questions_file, s.progress_file, s.corpus_dir))
            return self._tutor[1]

    # Questions -------------------------------------------------------------------------

    def search(self, question: str, k: int | None = None) -> list[Passage]:
        query = clean_question(question, self.settings)  # a bad question fails before any index work
        return self.retriever.ranked(query, k)

    def gate(self, question: str, history: list[str] | None = None) -> GateDecision:
        """Whether the guide covers `question` (read with its conversation), and the score
        the decision was made on: what `ftchat eval --calibrate` fits the threshold to."""
        question = clean_question(question, self.settings)
        return self._gate(self._retrieve(question, history or [], None))

    def ask(self, question: str, history: list[str] | None = None, k: int | None = None,
            earlier_answers: list[str] | None = None) -> ans.Answer:
        result = None
        for item in self.stream(question, history, k, earlier_answers):
            if isinstance(item, ans.Answer):
                result = item
        assert result is not None
        return result

    def stream(
        self, question: str, history: list[str] | None = None, k: int | None = None,
        earlier_answers: list[str] | None = None,
    ) -> Iterator[str | ans.Answer]:
        """Yield pieces of the answer as they are verified, then the final Answer.

        `history`: the conversation's earlier questions; `earlier_answers`: the answers it
        showed, whose sentences this answer does not repeat unless asked to."""
        question = clean_question(question, self.settings)
        turn = self._retrieve(question, history or [], k)
        decision = self._gate(turn)
        if not decision.answerable:
            turn.passages = gate.closest_sections(turn.passages)
            text = gate.declined_text(turn.passages, decision.unknown_names)
            yield text
            yield turn.answer(text=text, mode=AnswerMode.DECLINED)
            return
        evidence = self._evidence(turn, earlier_answers)
        # The opening is the guide's own sentence: shown now, before the model loads or
        # writes, and kept whatever the model's wording turns out to be.
        check = StreamCheck(evidence, self.retriever.embedder, opening=True)
        if check.text:
            yield check.text
        loaded_before, loading = self.generator_loaded(), time.perf_counter()
        generator = self.load_generator()
        if not loaded_before:
            turn.exclude_loading(time.perf_counter() - loading)
        tokens = 0
        start = check.text if generator.continues_opening else ""
        messages = self._messages(turn, evidence, start, history)
        config = GenerationConfig(max_new_tokens=self.settings.max_new_tokens)
        with closing(generator.stream(messages, config)) as pieces:
            for piece in pieces:
                turn.first_token()
                tokens += 1
                yield from check.feed(piece)
                if check.gave_up:
                    break
        yield from check.finish()
        # A model that continues the opening may end at once: the opening is its answer.
        ended_there = generator.continues_opening and not (check.dropped or check.gave_up)
        if check.written or ended_there:
            yield turn.answer(text=check.text, mode=AnswerMode.GENERATED, evidence=evidence, tokens=tokens,
                              dropped=check.dropped, written=check.written)
            return
        # Nothing the model wrote survived: the rest of the evidence, after the opening.
        text = ans.extractive_answer(evidence)
        if text[len(check.text):]:
            yield text[len(check.text):]
        yield turn.answer(text=text, mode=AnswerMode.EXTRACTIVE, evidence=evidence, tokens=tokens,
                          dropped=check.dropped)

    def _gate(self, turn: _Turn) -> GateDecision:
        return gate.decide(turn.passages, question=turn.question, query=turn.query,
                           keyword=self.index.keyword, threshold=self.settings.gate_threshold,
                           learned_threshold=self.settings.learned_gate_threshold)

    def _messages(self, turn: _Turn, evidence: EvidenceSet, start: str,
                  history: list[str] | None) -> list[dict]:
        # The earlier question as the model sees it: cut like any question, so that a huge
        # paste earlier in the conversation cannot overflow the model's context.
        cut = self.settings.max_question_chars
        context = history[-1][:cut] if history and turn.query != turn.question else None
        return build_messages(turn.question, evidence, context, start)

    def evidence(self, question: str, history: list[str] | None = None,
                 earlier_answers: list[str] | None = None) -> EvidenceSet:
        """The evidence an answer to `question` is built from (the gate aside): what the
        model is prompted with, and what its training rows are built on."""
        question = clean_question(question, self.settings)
        return self._evidence(self._retrieve(question, history or [], None), earlier_answers)

    def _evidence(self, turn: _Turn, earlier_answers: list[str] | None) -> EvidenceSet:
        retriever = self.retriever
        return select_evidence(
            turn.query, turn.passages, retriever.embedder, query_vector=turn.query_vector,
            term_weight=self.index.keyword.idf, shown=shown_sentences(turn.question, earlier_answers or []),
            asked=turn.question, policy=self.evidence_policy, scorer=self.unit_scorer,
        )

    def _retrieve(self, question: str, history: list[str], k: int | None) -> _Turn:
        """The passages for a (cleaned) question read with its conversation, timed apart
        from start-up."""
        # Loading the index and models is start-up work, reported apart from the question's own.
        loading = time.perf_counter()
        retriever = self.retriever
        retriever.embedder.load()
        timings = {}
        if (load_ms := (time.perf_counter() - loading) * 1000) > 50:
            timings["load_ms"] = load_ms
        started = time.perf_counter()
        query = condense(question, history)
        if history:  # the question is clean already; a follow-up joined with its turn may be too long
            query = clean_question(query, self.settings)
        query_vector = retriever.embedder.encode([query])[0]
        passages = retriever.ranked(query, k or self.settings.top_k, query_vector)
        timings["retrieve_ms"] = (time.perf_counter() - started) * 1000
        return _Turn(question, query, query_vector, passages, self.settings.model, timings, started)


def _whole_sections(index: Index) -> list[Passage]:
    """Every indexed chunk as a passage (no question: no scores)."""
    return [Passage(chunk, 0.0, 0, 0.0, 0.0) for chunk in index.chunks]


@dataclass
class _Turn:
    """One question on its way to an Answer: what was retrieved, and the clock."""

    question: str
    query: str
    query_vector: np.ndarray
    passages: list[Passage]
    model: str
    timings: dict[str, float]
    started: float

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def exclude_loading(self, seconds: float) -> None:
        """Model loading happened mid-question: count it as start-up, not answer time."""
        self.timings["load_ms"] = self.timings.get("load_ms", 0.0) + seconds * 1000
        self.started += seconds

    def first_token(self) -> None:
        self.timings.setdefault("first_token_ms", self._elapsed_ms())

    def answer(self, *, text: str, mode: AnswerMode, evidence: EvidenceSet | None = None,
               tokens: int = 0, dropped: list[str] | None = None, written: int = 0) -> ans.Answer:
        self.first_token()
        self.timings["total_ms"] = self._elapsed_ms()
        return ans.Answer(
            question=self.question, text=text, answerable=mode != AnswerMode.DECLINED,
            citations=ans.citations_for(text, evidence) if evidence else [], passages=self.passages,
            model=self.model, timings=self.timings, tokens=tokens, mode=mode, search_query=self.query,
            dropped_sentences=dropped or [], model_sentences=written,
        )
