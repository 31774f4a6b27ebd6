"""Start the ftchat page: `python app.py [--host H] [--port P] [--auth user:password] [--share]`.

This is `ftchat serve` (same options, defaults from FTCHAT_HOST, FTCHAT_PORT and FTCHAT_AUTH,
same one-line errors), runnable from a plain checkout without installing the package.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # run from a plain checkout too

from ftchat.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["serve", *sys.argv[1:]], prog_name="ftchat")
