"""Words and sentences: the one tokenizer and the one sentence splitter every stage shares.

At the bottom of the package (it imports nothing of ftchat): BM25, evidence scoring,
verification and chunking all split text the same way.
"""

from __future__ import annotations

import re

_STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from has have how i if in into is it its
    me my of on or so such than that the their them then there these this those to was we
    what when where which who why will with you your about should would could vs
    use used using""".split()
)


def _stem(word: str) -> str:
    # A deliberately tiny stemmer: enough that "balancing" meets "balance" and "layers"
    # meets "layer", predictable enough that exact terms like "GPTQ" stay exact.
    for suffix, replacement, min_len in (
        ("ies", "y", 5),
        ("ing", "", 6),
        ("ed", "", 5),
        ("es", "", 6),
        ("s", "", 4),
        ("e", "", 5),
    ):
        if word.endswith(suffix) and len(word) >= min_len and not word.endswith("ss"):
            return word[: len(word) - len(suffix)] + replacement
    return word


_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_CLITIC = re.compile(r"['\u2019](s|t|re|ve|ll|d|m)\b")


def tokenize(text: str) -> list[str]:
    """Stemmed words without stop words. A hyphenated word also yields its joined form, so
    "finetuning" meets "fine-tuning" and "pretrained" meets "pre-trained"; its parts still
    meet "fine tuning" written as two words. Clitics ('s, n't, 're) are dropped."""
    terms = []
    for word in _WORD.findall(_CLITIC.sub("", text.lower())):
        parts = word.split("-")
        if len(parts) > 1:
            terms.append("".join(parts))
        terms.extend(parts)
    return [_stem(w) for w in terms if w not in _STOPWORDS]


# The one sentence rule, for the guide's chunks, its evidence sentences and the model's
# answers (which quote them): a sentence ends at . ! or ?, then any citation markers, then
# white space before an upper-case letter, digit, quote, "(" or "[". Cheap on purpose (no
# NLP model at index time). Citation markers are taken possessively, so "sentence. [3]" is
# never split into "sentence." and a bare "[3]"; a full stop after an abbreviation ("Hu et
# al. (2021)", "e.g. LoRA") ends nothing.
_ABBREVIATIONS = ("et al", r"e\.g", r"i\.e", "vs", "etc", "cf", "Fig", "No")
_NOT_AFTER_ABBREVIATION = "".join(f"(?<!(?i:\\b{a}))" for a in _ABBREVIATIONS)
SENTENCE_END = re.compile(
    rf"(?:[!?]|{_NOT_AFTER_ABBREVIATION}\.)(?:\s*\[\d+(?:\s*,\s*\d+)*\])*+\s+(?=[\"'(\[A-Z0-9])"
)



def split_sentences(text: str) -> list[str]:
    """The sentences of text, white space flattened; a blank line always ends one."""
    sentences: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        flat = " ".join(paragraph.split())
        start = 0
        for match in SENTENCE_END.finditer(flat):
            sentences.append(flat[start : match.end()].strip())
            start = match.end()
        if flat[start:]:
            sentences.append(flat[start:])
    return sentences
