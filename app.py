"""Start the ftchat page: `python app.py [--host 127.0.0.1] [--port 7860]`.

Defaults come from FTCHAT_HOST / FTCHAT_PORT (127.0.0.1:7860). Everything else lives in
ftchat.ui; `ftchat serve` does the same.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # run from a plain checkout too

from ftchat.config import Settings  # noqa: E402
from ftchat.ui import launch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the ftchat page (local, offline).")
    parser.add_argument("--host", help="address to bind (default: FTCHAT_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: FTCHAT_PORT or 7860)")
    args = parser.parse_args()
    launch(Settings(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
