"""A question read with its conversation: the query a follow-up retrieves with, and what the
conversation has already shown that an answer should not repeat."""

from __future__ import annotations

import re

from ftchat.answering.verify import claim_text
from ftchat.text import split_sentences, tokenize

_FOLLOW_UP = re.compile(
    r"^\s*(and|but|also|so|then|what about|how about|ok|okay|why)\b"
    r"|\b(it|its|it's|they|them|their|this|that|these|those|latter|former|one|ones|same)\b",
    re.IGNORECASE,
)


def condense(question: str, history: list[str]) -> str:
    """The query to retrieve with: a follow-up is read together with the previous turn.

    Deterministic on purpose: a follow-up (pronoun, "and ...", "what about ...", or
    a single content word) is prefixed with the previous turn's own query, so
    "what does it cost in memory?" after a QLoRA question searches for QLoRA and memory.
    A short question with two content words ("What is Zorblax tuning?") stands alone:
    it usually names a new topic.
    """
    query = ""
    for turn in [*history, question]:
        turn = " ".join(turn.split())
        if query and (_FOLLOW_UP.search(turn) or len(tokenize(turn)) <= 1):
            # Keep only the last two turns' words so an old topic does not stick forever.
            previous = query.split(" || ")[-1]
            query = f"{previous} || {turn}"
        else:
            query = turn
    return query.replace(" || ", " ")


_ASKS_AGAIN = re.compile(r"\b(again|repeat|remind me|once more|recap|summari[sz]e)\b", re.IGNORECASE)


def shown_sentences(question: str, earlier_answers: list[str]) -> list[str]:
    """What the conversation has shown that this question's answer should not repeat:
    the earlier answers' sentences without their markers; nothing when it asks again."""
    if _ASKS_AGAIN.search(question):
        return []
    return [claim for text in earlier_answers for s in split_sentences(text) if (claim := claim_text(s))]
