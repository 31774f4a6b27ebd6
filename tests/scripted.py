"""A generator that replays a script: the answer pipeline's control flow without a model.

`ScriptedGenerator(text)` has the surface `Assistant` uses of the real generator (`name`,
`stream(messages, config) -> Iterator[str]`, `last_decoded_tokens`, `continues_opening`) and writes `text`
in word pieces of at most four characters, so a sentence arrives the way a tokenizer
would deliver it, a word at a time in several pieces. It honours
`config.max_new_tokens` (which is how a cut-off tail is made) and stops when the reader
stops reading. `with use_scripted_generator(generator) as name:` registers it through the
model registry, like any model, for the `with` block (Settings(model=name) loads it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager

from ftchat.models import loader as models
from ftchat.models.generation import GenerationConfig

_PIECE = re.compile(r"\s*\S{1,4}")


def word_pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


class ScriptedGenerator:
    def __init__(self, text: str, name: str = "scripted", continues_opening: bool = False) -> None:
        self.name = name
        self.text = text
        self.continues_opening = continues_opening
        # What the registry logs of every model it loads.
        self.dtype, self.backend, self.source = "none", "scripted", "tests/scripted.py"
        self.load_seconds = 0.0
        self.last_decoded_tokens = 0
        self.calls: list[list[dict]] = []  # the messages of every stream() call

    def stream(self, messages: list[dict], config: GenerationConfig) -> Iterator[str]:
        self.calls.append(messages)
        self.last_decoded_tokens = 0
        for piece in word_pieces(self.text)[: config.max_new_tokens]:
            self.last_decoded_tokens += 1
            yield piece


def use_scripted_generator(generator: ScriptedGenerator) -> AbstractContextManager[str]:
    """Register `generator` under its name for a `with` block, which gets the name to pass as
    Settings(model=...); the registry is as it was when the block ends."""
    return models.registered_generator(generator.name, lambda settings: generator)
