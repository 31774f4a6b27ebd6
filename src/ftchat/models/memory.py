"""glibc malloc tuning for a long-running server that loads torch models (no-ops elsewhere)."""

from __future__ import annotations

try:
    import ctypes

    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def limit_malloc_arenas() -> None:
    """Each Gradio worker thread that runs torch gets its own malloc arena by default, and
    freed memory stays in those arenas, so a server's RSS creeps up with every new thread."""
    if _LIBC is not None:
        _LIBC.mallopt(-8, 2)  # M_ARENA_MAX


def release_free_memory() -> None:
    """Hand memory that was freed back to the system (after a model load, after an answer)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
