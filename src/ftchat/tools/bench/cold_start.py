"""Fresh `ftchat` processes, as a user starts them: the seconds to a first answer, and a
process's own peak memory (the seconds to a usable page are page_client's, on its page).
Each child reads the bench's settings (Settings.child_environment), not whatever FTCHAT_*
the parent's environment held."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ftchat.config import Settings


def ftchat_command() -> list[str]:
    """The `ftchat` script beside this interpreter, or the module where there is none."""
    script = Path(sys.executable).with_name("ftchat")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ftchat.cli"]


def cold_start_answer(settings: Settings, question: str, **env: str) -> dict:
    """A fresh `ftchat ask --json` process until its answer is printed (the user has it
    then; the interpreter's own teardown of torch takes most of another second, measured
    as `exit_seconds`); its peak resident memory from wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*ftchat_command(), "ask", question, "--json"], env=settings.child_environment(**env),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    output = proc.stdout.readline() if proc.stdout else b""
    seconds = time.perf_counter() - started
    peak_mb = _peak_rss_mb(proc.pid)  # up to its answer, read while it is still there
    output += proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    exit_seconds = time.perf_counter() - started
    if peak_mb is None:  # ru_maxrss is in KiB on Linux, bytes on macOS
        peak_mb = usage.ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    try:
        answer = json.loads(output.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {}
    return {
        "seconds": seconds, "exit_seconds": exit_seconds, "peak_rss_mb": peak_mb, "ok": proc.returncode == 0,
        "answerable": answer.get("answerable"), "citations": len(answer.get("citations", [])),
    }


def _peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory since it started its program (VmHWM), where Linux
    reports it. Not wait4's ru_maxrss: that counts the memory the child shared with this
    process until exec, so late in a bench run, with models loaded here, a child that
    peaked at 640 MB was reported at 1,583 MB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
