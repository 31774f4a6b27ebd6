"""A model folder's chat tokenizer without importing transformers where the folder allows it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ftchat.models.hf import quiet_transformers

log = logging.getLogger(__name__)


class ChatTokenizer:
    """A model folder's tokenizer.json and chat template, run with the tokenizers library
    and jinja2 as transformers runs them, without importing transformers (about 0.8 s of
    every start here). Tests compare its token ids with transformers' on answer prompts."""

    def __init__(self, folder: Path) -> None:
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from tokenizers import Tokenizer

        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        template_file = folder / "chat_template.jinja"
        template = (template_file.read_text(encoding="utf-8") if template_file.is_file()
                    else settings.get("chat_template"))
        if not isinstance(template, str):
            raise ValueError("no single chat template")
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.special_tokens = {
            k: v for k, v in settings.items() if k.endswith("_token") and isinstance(v, str)
        }

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        # transformers' settings; a template with tags of its own ({% generation %}) fails
        # to compile here and is left to transformers.
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.globals["raise_exception"] = raise_exception
        self._template = environment.from_string(template)
        self.eos_token_id = self._token_id("eos_token")
        self.pad_token_id = self._token_id("pad_token")

    def _token_id(self, role: str) -> int | None:
        token = self.special_tokens.get(role)
        return None if token is None else self._tokenizer.token_to_id(token)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            tokenize: bool = True) -> list[int] | str:
        text = self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **self.special_tokens)
        if not tokenize:
            return text
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Plain text's token ids (as transformers' encode with add_special_tokens=False)."""
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def load_chat_tokenizer(folder: Path):
    """ChatTokenizer where the folder allows it, else transformers' AutoTokenizer."""
    try:
        return ChatTokenizer(folder)
    except Exception as exc:  # anything unusual about the folder: transformers is the reference
        log.debug("Tokenizer of %s goes through transformers (%s)", folder, exc)
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)
