"""transformers, loaded quietly and one model at a time."""

from __future__ import annotations

import threading

# transformers' lazy imports and the default dtype it sets while building a model are
# process-wide: an embedder and a generator loading at once in two threads (the page's
# warm-up and a first question) failed imports or built a model with mixed dtypes that
# failed every answer. Every model load in ftchat holds this lock.
MODEL_LOADING = threading.RLock()


def quiet_transformers() -> None:
    """Per-load progress bars and advice from transformers are noise in a CLI and a chat page."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
