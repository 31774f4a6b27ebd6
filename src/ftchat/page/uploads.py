"""Documents added from the page: checked by content, stored under a safe name inside the
index's own uploads/ folder, then indexed with the guide.

    lines, stored = store_uploads(paths, settings.index_dir / "uploads")
    lines += index_uploads(assistant, stored)

Messages are Markdown for the page, with every file name HTML-escaped.
"""

from __future__ import annotations

import html
import logging
import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

from ftchat.api import Assistant
from ftchat.documents.corpus import SUPPORTED_SUFFIXES, display_path
from ftchat.index.store import Index, open_index, sha256_file

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_BINARY_MAGIC = (b"PK\x03\x04", b"\x7fELF", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"MZ",
                 b"\x1f\x8b", b"BZh", b"7z\xbc\xaf", b"Rar!", b"%PDF")
_HTML_TAG = re.compile(rb"<\s*(!doctype|html|head|body|p|h[1-6]|div|article|section|main|title|ul|table)\b",
                       re.IGNORECASE)

# (fraction done, what is happening): Gradio's gr.Progress fits.
Progress = Callable[..., object]


def check_upload(path: Path) -> str | None:
    """Why this file cannot be added, or None. The content decides, not only the name."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        return f"unsupported file type '{html.escape(suffix or 'none')}' (use {kinds})"
    try:
        size = path.stat().st_size
    except OSError:
        return "the upload could not be read"
    if size == 0:
        return "the file is empty"
    if size > MAX_UPLOAD_BYTES:
        return f"too large ({size / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES // (1024 * 1024)} MB)"
    data = path.read_bytes()
    if suffix == ".pdf":
        return None if data.startswith(b"%PDF-") else "named .pdf but its content is not a PDF"
    if data.startswith(_BINARY_MAGIC) or b"\x00" in data[:8192]:
        return f"named {suffix} but its content is binary, not text"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    if suffix in (".html", ".htm") and not _HTML_TAG.search(data[:16384]):
        return "named .html but contains no HTML markup"
    return None


def display_name(original: str) -> str:
    """A file name for messages: control and format characters (escapes, bidi overrides) removed."""
    shown = "".join(ch for ch in original if unicodedata.category(ch) not in ("Cc", "Cf"))
    return shown[:120] or "(unnamed)"


def safe_name(original: str) -> str:
    """A file name with no path, no leading dot and only [A-Za-z0-9._-]."""
    name = unicodedata.normalize("NFKC", original.replace("\\", "/").split("/")[-1])
    stem, suffix = os.path.splitext(name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:80] or "document"
    suffix = suffix.lower() if suffix.lower() in SUPPORTED_SUFFIXES else ".txt"
    return stem + suffix


def place_upload(source: Path, uploads: Path) -> tuple[Path, bool]:
    """Copy an upload into uploads/ under a safe, unused name; (path, already_present)."""
    name = safe_name(source.name)
    digest = sha256_file(source)
    stem, suffix = os.path.splitext(name)
    for attempt in range(1, 1000):
        dest = uploads / (name if attempt == 1 else f"{stem}-{attempt}{suffix}")
        if dest.is_symlink():
            continue  # not ours: never read or write through it
        if dest.resolve().parent != uploads:
            raise ValueError(f"unsafe upload name {name!r}")
        if dest.exists():
            if sha256_file(dest) == digest:
                return dest, True
            continue
        # Exclusive create of a fresh temp file: a symlink planted in uploads/ is never
        # followed (O_EXCL fails on any existing name, O_NOFOLLOW on links).
        tmp = uploads / f".{dest.name}.part"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(source.read_bytes())
        os.replace(tmp, dest)
        return dest, False
    raise ValueError("too many uploads with the same name")


def store_uploads(paths: list[str], uploads: Path,
                  progress: Progress | None = None) -> tuple[list[str], list[tuple[str, Path]]]:
    """Check and copy each upload into `uploads`: (messages, [(shown name, stored path)])
    for the files that are new and acceptable."""
    uploads = uploads.resolve()
    uploads.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    stored: list[tuple[str, Path]] = []
    for i, path in enumerate(paths):
        original = display_name(Path(path).name)
        shown = html.escape(original)
        if progress:
            progress((i + 0.5) / (len(paths) + 2), desc=f"Checking {original}")
        problem = check_upload(Path(path))
        if problem:
            lines.append(f"**Rejected {shown}:** {problem}")
            continue
        try:
            dest, duplicate = place_upload(Path(path), uploads)
        except (OSError, ValueError) as exc:
            lines.append(f"**Rejected {shown}:** could not be stored ({html.escape(str(exc))})")
            continue
        if duplicate:
            lines.append(f"**{shown}** is already in the index (as {dest.name}).")
            continue
        stored.append((original, dest))
    return lines, stored


def index_uploads(assistant: Assistant, stored: list[tuple[str, Path]]) -> list[str]:
    """Index the stored uploads with the guide and switch the assistant to the new index.

    A file that gives no passages is removed again (with the loader's reason); when indexing
    fails, every stored file is removed and the index stays as it was."""
    settings = assistant.settings
    try:
        index = open_index(settings, add_sources=[dest for _, dest in stored], progress=True)
        empty = [dest for _, dest in stored if not _chunks_from(index, dest)]
        reasons = {dest: _warning_for(index, dest) for dest in empty}
        if empty:
            for dest in empty:
                dest.unlink(missing_ok=True)
            index = open_index(settings)  # drops the removed files again
        assistant.reload(index)
    except Exception as exc:
        log.exception("Indexing uploads failed")
        for _, dest in stored:
            dest.unlink(missing_ok=True)
        return [f"**Indexing failed** ({type(exc).__name__}: {html.escape(str(exc))}); "
                "the index is unchanged."]
    lines = []
    for original, dest in stored:
        count = _chunks_from(index, dest)
        if count:
            plural = "" if count == 1 else "s"
            lines.append(f"**Added {html.escape(original)}** as `{dest.name}`: "
                         f"{count} passage{plural} indexed.")
        else:
            why = reasons.get(dest) or "no readable text found in it."
            lines.append(f"**Rejected {html.escape(original)}:** {html.escape(why)}")
    return lines


def _warning_for(index: Index, path: Path) -> str | None:
    """The loader's warning about this file (why it gave no text), without its full path."""
    name = display_path(path)
    for warning in index.manifest.get("warnings", []):
        if warning.startswith(name):
            return f"{path.name}{warning[len(name):]}"
    return None


def _chunks_from(index: Index, path: Path) -> int:
    name = display_path(path)
    return sum(1 for c in index.chunks if c.source == name)
