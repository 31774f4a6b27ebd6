"""Start the ftchat page: `python app.py [--host 127.0.0.1] [--port 7860]`.

Defaults come from FTCHAT_HOST / FTCHAT_PORT (127.0.0.1:7860); `--auth user:password` or
FTCHAT_AUTH=user:password makes the page and its API ask for credentials. Everything else lives in
ftchat.ui; `ftchat serve` does the same.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # run from a plain checkout too

from ftchat.config import Settings, SettingsError  # noqa: E402
from ftchat.corpus import CorpusError  # noqa: E402
from ftchat.models import ModelNotAvailable  # noqa: E402
from ftchat.ui import launch, parse_auth  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the ftchat page (local, offline).")
    parser.add_argument("--host", help="address to bind (default: FTCHAT_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: FTCHAT_PORT or 7860)")
    parser.add_argument("--auth", default=os.environ.get("FTCHAT_AUTH") or None,
                        help="user:password required to use the page (default: FTCHAT_AUTH)")
    args = parser.parse_args()
    try:
        auth = parse_auth(args.auth) if args.auth else None
    except ValueError as exc:
        parser.error(f"--auth: {exc}")
    try:
        launch(Settings(), host=args.host, port=args.port, auth=auth)
    except (CorpusError, ModelNotAvailable, SettingsError) as exc:
        sys.exit(f"Error: {exc}")
    except OSError as exc:  # an unwritable index folder, a path through a file, …
        if exc.filename is None:
            raise
        sys.exit(f"Error: cannot use {exc.filename}: {exc.strerror}")


if __name__ == "__main__":
    main()
