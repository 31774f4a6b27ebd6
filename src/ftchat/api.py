"""The Python API that the CLI and the page both use.

    from ftchat.api import Assistant
    assistant = Assistant()
    answer = assistant.ask("What is QLoRA?")
    for piece in assistant.stream("and how does it save memory?", history=["What is QLoRA?"]):
        ...  # str pieces of verified text, then the final Answer
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing

from . import answer as ans
from .config import Settings
from .embedding import get_embedder
from .evidence import select_evidence
from .generation import GenerationConfig, Generator, generator_is_loaded, get_generator
from .index import Index, open_index
from .retrieval import Passage, Retriever, clean_question

# Sentences in a row that may fail verification before generation is abandoned; a sentence
# counts as failed as soon as it holds a word no source allows. Replaying the model's
# output for 30 eval questions: this keeps every sentence that verification kept without
# it, and decodes a median of 27 tokens instead of 66. Giving up after one failure decoded
# 4, but lost a kept sentence.
GIVE_UP_AFTER = 2


class Assistant:
    """Answers questions from the indexed guide. Index and model are opened on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._index: Index | None = None
        self._retriever: Retriever | None = None
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
                self._retriever = Retriever(index, get_embedder(self.settings.embedder), self.settings)
            return self._retriever

    @property
    def generator(self) -> Generator:
        s = self.settings
        return get_generator(s.model, s.cache_dir, s.dtype, s.threads, s.decoder)

    def generator_loaded(self) -> bool:
        s = self.settings
        return generator_is_loaded(s.model, s.cache_dir, s.dtype, s.decoder)

    def reload(self, index: Index) -> None:
        with self._lock:
            self._index, self._retriever = index, None

    # Questions -------------------------------------------------------------------------

    def search(self, question: str, k: int | None = None) -> list[Passage]:
        clean_question(question, self.settings)  # a bad question fails before any index work
        return self.retriever.search(question, k)

    def ask(self, question: str, history: list[str] | None = None, k: int | None = None) -> ans.Answer:
        result = None
        for item in self.stream(question, history, k):
            if isinstance(item, ans.Answer):
                result = item
        assert result is not None
        return result

    def stream(
        self, question: str, history: list[str] | None = None, k: int | None = None
    ) -> Iterator[str | ans.Answer]:
        """Yield pieces of the answer as they are verified, then the final Answer."""
        question = clean_question(question, self.settings)
        # Loading the index and models is start-up work, reported apart from the question's own.
        loading = time.perf_counter()
        retriever = self.retriever
        retriever.embedder.model  # noqa: B018 - loads it now
        timings = {}
        if (load_ms := (time.perf_counter() - loading) * 1000) > 50:
            timings["load_ms"] = load_ms
        started = time.perf_counter()
        query = clean_question(ans.condense(question, history or []), self.settings)
        query_vector = retriever.embedder.encode([query])[0]
        passages = retriever.search(query, k or self.settings.top_k, query_vector)
        timings["retrieve_ms"] = (time.perf_counter() - started) * 1000

        def finish(text: str, answerable: bool, mode: str, evidence, tokens: int = 0, **extra):
            timings.setdefault("first_token_ms", (time.perf_counter() - started) * 1000)
            timings["total_ms"] = (time.perf_counter() - started) * 1000
            citations = ans.citations_for(text, evidence) if evidence else []
            return ans.Answer(
                question, text, answerable, citations, passages, self.settings.model,
                timings, tokens, mode, query, **extra,
            )

        if not ans.is_covered(passages, self.settings.gate_threshold, retriever.rare_terms(query)):
            passages = ans.closest_sections(passages, self.settings.gate_threshold)
            text = ans.declined_text(passages)
            yield text
            yield finish(text, False, "declined", None)
            return

        embedder = retriever.embedder
        if not self.generator_loaded():
            loading = time.perf_counter()
            self.generator  # noqa: B018 - loads it now
            timings["load_ms"] = timings.get("load_ms", 0.0) + (time.perf_counter() - loading) * 1000
            started += (time.perf_counter() - loading)
        evidence = select_evidence(query, passages, embedder, query_vector, self.index.keyword.idf)
        # The earlier question as the model sees it: cut like any question, so that a huge
        # paste earlier in the conversation cannot overflow the model's context.
        context = history[-1][: self.settings.max_question_chars] if history and query != question else None
        messages = ans.build_messages(question, evidence, context)
        config = GenerationConfig(max_new_tokens=self.settings.max_new_tokens)

        emitted: list[str] = []
        streamed: list[str] = []
        dropped: list[str] = []
        tokens = 0
        buffer = ""

        def judge(sentence: str) -> str | None:
            verdict = ans.verify_sentence(sentence, evidence, embedder)
            normal = verdict.text.lower()
            if not verdict.supported or any(normal == e.lower() for e in emitted):
                if verdict.text:
                    dropped.append(verdict.text)
                return None
            emitted.append(verdict.text)
            streamed.append(("" if len(emitted) == 1 else " ") + f"{verdict.text} [{verdict.n}]")
            return streamed[-1]

        failed_in_a_row = 0
        with closing(self.generator.stream(messages, config)) as pieces:
            for piece in pieces:
                if "first_token_ms" not in timings:
                    timings["first_token_ms"] = (time.perf_counter() - started) * 1000
                tokens += 1
                buffer += piece
                while match := ans.SENTENCE_BOUNDARY.search(buffer):
                    sentence, buffer = buffer[: match.end()], buffer[match.end() :]
                    if (out := judge(sentence)) is not None:
                        failed_in_a_row = 0
                        yield out
                    else:
                        failed_in_a_row += 1
                # The sentence still being written may already be sure to fail.
                doomed = bool(buffer.strip()) and not evidence.can_still_pass(ans.claim_text(buffer))
                if failed_in_a_row + doomed >= GIVE_UP_AFTER:
                    # The model has drifted from its evidence; what it writes next is
                    # dropped too, so stop paying for it.
                    if doomed:
                        dropped.append(buffer.strip())
                    buffer = ""
                    break
        tail = buffer.strip()
        # A tail without final punctuation was cut off by the token limit: never shown.
        if tail and tail.rstrip("]0123456789[ ,")[-1:] in ".!?":
            if (out := judge(tail)) is not None:
                yield out
        elif tail:
            dropped.append(tail)

        if streamed:
            # The top-ranked section should be cited: when the model's kept sentences all
            # came from lower-ranked sources, add that section's best evidence sentence,
            # if it is about as relevant as the best evidence (not a near miss).
            lead = ans.lead_evidence(evidence)
            best = max(e.score for e in evidence.items)
            if lead and 1 not in ans.cited_numbers("".join(streamed)) and lead.score >= best - 0.1:
                streamed.append(f" {lead.sentence} [{lead.n}]")
                yield streamed[-1]
            text = "".join(streamed)
            yield finish(text, True, "generated", evidence, tokens, dropped_sentences=dropped)
            return
        text = ans.extractive_answer(evidence)
        yield text
        yield finish(text, True, "extractive", evidence, tokens, dropped_sentences=dropped)
