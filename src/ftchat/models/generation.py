"""A loaded model that writes the answer, streamed token by token.

The model comes from the registry (models.py: `get_generator(settings)`); its decoding
backend (decoders.py) is llama.py's loop or transformers' generate(). This module only
turns a chat into prompt tokens and the decoded tokens back into text pieces.

Speed choices (measured with `ftchat bench` and `ftchat eval`): decoding one token reads
every weight once, so it is bound by memory bandwidth. Where the CPU has native bf16
instructions (avx512_bf16 or AMX) the model runs in bfloat16: half the bytes per token,
same eval figures; elsewhere in float32 (see config.resolve_dtype).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

from ftchat.models.decoders import Decoder


@dataclass
class GenerationConfig:
    max_new_tokens: int = 120
    # Stop when the last `repeat_window` tokens already occurred earlier: small models
    # loop, and a loop is never worth waiting for.
    repeat_window: int = 8


class Generator:
    """One loaded model. `stream()` yields text pieces; only one generation runs at a time."""

    def __init__(self, name: str, tokenizer, decoder: Decoder, stop_ids: set[int], source: str,
                 dtype: str = "float32", load_seconds: float = 0.0) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.stop_ids = stop_ids
        self.source = source
        self.dtype = dtype
        self.load_seconds = load_seconds
        # The model continues the answer's opening (ModelPreset.continues_opening).
        self.continues_opening = False
        # Tokens the model decoded in the last stream(): what the answer actually cost.
        self.last_decoded_tokens = 0
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self.decoder.backend

    def weight_bytes(self) -> int:
        """Bytes of weights read per decoded token (what bounds the decoding speed)."""
        return self.decoder.weight_bytes()

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        return prompt_tokens(self.tokenizer, messages)

    def tokens(self, prompt: list[int], max_new_tokens: int, to_the_limit: bool = False) -> Iterator[int]:
        """Greedy token ids after the prompt, stop token excluded. Closing it stops the model.
        `to_the_limit` ignores stop tokens, so that a benchmark decodes a fixed length."""
        return self.decoder.greedy(prompt, max_new_tokens, set() if to_the_limit else self.stop_ids)

    def stream(self, messages: list[dict], config: GenerationConfig | None = None) -> Iterator[str]:
        """Text pieces as the model writes them, ending at whole words (as transformers'
        TextIteratorStreamer does) so that a later token never changes what was shown."""
        config = config or GenerationConfig()
        window = config.repeat_window
        with self._lock:
            generated: list[int] = []
            shown = 0
            self.last_decoded_tokens = 0
            with closing(self.tokens(self.prompt_tokens(messages), config.max_new_tokens)) as tokens:
                for token in tokens:
                    generated.append(token)
                    self.last_decoded_tokens = len(generated)
                    if len(generated) >= 2 * window and _repeats(generated, window):
                        break
                    text = self.tokenizer.decode(generated, skip_special_tokens=True)
                    if text.endswith("\n"):
                        ready = len(text)
                    elif text.endswith("\ufffd"):  # a character split across tokens
                        continue
                    else:
                        ready = text.rfind(" ") + 1
                    if ready > shown:
                        yield text[shown:ready]
                        shown = ready
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if len(text) > shown:
                yield text[shown:]


def prompt_tokens(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids a chat model sees before it writes its answer (training.py trains on
    exactly these). A last assistant message is the start of the answer: the model
    continues it (transformers' continue_final_message, which ChatTokenizer lacks)."""
    start = ""
    if messages and messages[-1]["role"] == "assistant":
        messages, start = messages[:-1], messages[-1]["content"]
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded) + (list(tokenizer.encode(start, add_special_tokens=False)) if start else [])


def _repeats(generated: list[int], window: int) -> bool:
    tail = generated[-window:]
    return any(generated[i : i + window] == tail for i in range(len(generated) - 2 * window + 1))
