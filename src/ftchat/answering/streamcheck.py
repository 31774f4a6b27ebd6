"""The check between the model and the reader: only verified sentences get through.

The model's text arrives in pieces; `StreamCheck` cuts it into sentences, verifies each
against the evidence, and hands back the ones to show, each with its citation [n]. It keeps
what it dropped, and says when the model has drifted so far that decoding more is wasted.
No model is needed to use it: feed it strings.

    check = StreamCheck(evidence, embedder, opening=True)
    show(check.text)                  # the answer's opening, already verified
    for piece in model_pieces:
        show(check.feed(piece))
        if check.gave_up:
            break
    show(check.finish())
    check.text, check.dropped
"""

from __future__ import annotations

from ftchat.answering import answer as ans
from ftchat.answering import verify
from ftchat.answering.evidence import Evidence, EvidenceSet
from ftchat.answering.policy import VERIFICATION
from ftchat.models.embedding import Embedder
from ftchat.text import SENTENCE_END

# Sentences in a row that may fail verification before generation is abandoned; a sentence
# counts as failed as soon as it holds a word no source allows. Replaying the model's
# output for 30 eval questions: this keeps every sentence that verification kept without
# it, and decodes a median of 27 tokens instead of 66. Giving up after one failure decoded
# 4, but lost a kept sentence.
GIVE_UP_AFTER = 2


class StreamCheck:
    """Verifies a model's answer sentence by sentence as its text arrives."""

    def __init__(self, evidence: EvidenceSet, embedder: Embedder, opening: bool = False) -> None:
        """`opening`: the answer starts with `answer.opening(evidence)`, shown at once; the
        model's sentences follow it, and one restating it is dropped as a repeat."""
        self.evidence = evidence
        self.embedder = embedder
        self.pieces: list[str] = []  # what the reader was shown, in order
        self.dropped: list[str] = []  # sentences (or a cut-off tail) that were not shown
        self.gave_up = False
        self.written = 0  # the model's sentences among the pieces
        self._kept: list[str] = []  # kept sentences without markers, to spot repeats
        self._shown_items: set[int] = set()  # evidence sentences the reader has already read
        self._failed_in_a_row = 0
        self._buffer = ""
        if opening and (first := ans.opening(evidence)):
            self.pieces.append(first)
            self._kept.append(evidence.items[0].sentence)
            self._shown_items.add(0)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def feed(self, piece: str) -> list[str]:
        """Take the next piece of the model's text; return the verified pieces to show now."""
        self._buffer += piece
        shown = []
        while match := SENTENCE_END.search(self._buffer):
            sentence, self._buffer = self._buffer[: match.end()], self._buffer[match.end() :]
            out = self._judge(sentence)
            if out is None:
                self._failed_in_a_row += 1
            else:
                self._failed_in_a_row = 0
                shown += [out] if out else []
        # The sentence still being written may already be sure to fail.
        claim = verify.claim_text(self._buffer)
        doomed = bool(self._buffer.strip()) and not verify.can_still_pass(claim, self.evidence)
        if self._failed_in_a_row + doomed >= GIVE_UP_AFTER:
            # The model has drifted from its evidence; what it writes next is dropped too,
            # so the caller should stop paying for it.
            if doomed:
                self.dropped.append(self._buffer.strip())
            self._buffer = ""
            self.gave_up = True
        return shown

    def finish(self) -> list[str]:
        """The model has stopped: judge what is left, then make sure the lead section is cited."""
        shown = []
        tail, self._buffer = self._buffer.strip(), ""
        # A tail without final punctuation was cut off by the token limit: never shown.
        if tail and tail.rstrip("]0123456789[ ,")[-1:] in ".!?":
            if out := self._judge(tail):
                shown.append(out)
        elif tail:
            self.dropped.append(tail)
        if self.written and (lead := self._missing_lead()) is not None:
            self.pieces.append(f" {lead.sentence} [{lead.n}]")
            shown.append(self.pieces[-1])
        return shown

    def _judge(self, sentence: str) -> str | None:
        """The sentence as shown (with its [n]); None when it is unsupported or a repeat;
        "" when it restates the opening (not shown, but no sign of drifting: a model asked
        the question naturally starts with what the opening already says)."""
        verdict = verify.verify_sentence(sentence, self.evidence, self.embedder)
        normal = verdict.text.lower()
        restates = verdict.supported and verdict.item in self._shown_items
        if not verdict.supported or restates or any(normal == k.lower() for k in self._kept):
            if verdict.text:
                self.dropped.append(verdict.text)
            return "" if restates else None
        self.written += 1
        self._kept.append(verdict.text)
        self.pieces.append(("" if len(self._kept) == 1 else " ") + f"{verdict.text} [{verdict.n}]")
        return self.pieces[-1]

    def _missing_lead(self) -> Evidence | None:
        """The top-ranked section should be cited: when the kept sentences all came from
        lower-ranked sources, its best evidence sentence, if it is about as relevant as the
        best evidence (not a near miss)."""
        lead = ans.lead_evidence(self.evidence)
        best = max(e.score for e in self.evidence.items)
        if lead and 1 not in ans.cited_numbers(self.text) and lead.score >= best - VERIFICATION.lead_slack:
            return lead
        return None
