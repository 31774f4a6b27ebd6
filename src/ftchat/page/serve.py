"""Serving the page: `launch()` in this process (what `ftchat serve` and `python app.py`
run), and `PageProcess`, the page in a child process on a free loopback port (for the
benchmark, the load test and the tests).

Gradio, torch and the index are imported only inside `launch()`, so a program that just
starts a child page pays none of that.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ftchat.config import Settings

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# launch() prints this line once the page answers; PageProcess waits for it.
READY_LINE = "ftchat page ready"


def exposure_warning(host: str, auth: tuple[str, str] | None, share: bool) -> str | None:
    """The loud warning for a page reachable by others without credentials, or None."""
    if auth:
        return None
    if share:
        where = "a public Gradio share link"
    elif host not in LOOPBACK_HOSTS:
        where = f"{host} (reachable from other machines)"
    else:
        return None
    bar = "!" * 78
    return (
        f"{bar}\n"
        f"WARNING: serving ftchat on {where} WITHOUT a password.\n"
        "Anyone who can reach it can use the assistant and add documents to your index.\n"
        "Use --auth user:password (or FTCHAT_AUTH=user:password), or bind 127.0.0.1.\n"
        f"{bar}"
    )


def launch(settings: Settings, host: str | None = None, port: int | None = None, share: bool = False) -> None:
    """Load the index, start the model warm-up, and serve the page (blocking).

    Binds `host`/`port` (default: settings.host/port); asks for `settings.auth` when set.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    demo, options = prepare_page(settings)
    host = host or settings.host
    warning = exposure_warning(host, settings.auth, share)
    if warning:
        log.warning("Serving on %s without --auth: anyone who can reach this address can use the page", host)
        print(warning, file=sys.stderr, flush=True)
    demo.launch(
        prevent_thread_lock=True,
        server_name=host,
        server_port=port or settings.port,
        auth=settings.auth,
        share=share,
        inbrowser=False,
        show_error=True,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        ssr_mode=False,
        **options,
    )
    print(f"{READY_LINE} after {time.perf_counter() - started:.1f} s: {demo.local_url}", flush=True)
    demo.block_thread()


def prepare_page(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """The page's Blocks (index loaded, built first when missing or stale; queue on) and
    its launch options."""
    from ftchat.api import Assistant
    from ftchat.models.memory import limit_malloc_arenas
    from ftchat.page import app as ui

    started = time.perf_counter()
    limit_malloc_arenas()
    assistant = Assistant(settings)
    index = assistant.index
    log.info("Index ready: %d passages from %d documents (%.1f s)", len(index.chunks),
             len(index.manifest.get("files", {})), time.perf_counter() - started)
    demo = ui.build_app(assistant)
    demo.queue(default_concurrency_limit=1)
    return demo, ui.launch_options()


# --- The page in a child process ------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PageProcess:
    """The page started as `command --host 127.0.0.1 --port <free port>` in a child process,
    its output in `log_path`.

    `command` defaults to `ftchat serve` (as `python -m ftchat.cli serve`: the load test's);
    some tests pass `[sys.executable, "app.py"]`. `env` defaults to this process's; it gets
    offline model hubs and unbuffered output added.

        page = PageProcess(tmp / "page.log")
        seconds = page.wait_ready()      # RuntimeError (with the log's tail) if it fails
        ...  page.url, page.process.pid
        page.stop()
    """

    def __init__(self, log_path: Path, env: dict[str, str] | None = None,
                 command: list[str] | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        env = dict(os.environ if env is None else env)
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
        command = command or [sys.executable, "-m", "ftchat.cli", "serve"]
        self.started = time.perf_counter()
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Seconds from the start until the page said it is ready."""
        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the page exited with {self.process.returncode}:\n{self.tail()}")
            if READY_LINE in self.log_path.read_text(errors="replace"):
                return time.perf_counter() - self.started
            time.sleep(0.1)
        raise RuntimeError(f"the page did not come up in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
