"""`python -m sourceprep_models` and the `sourceprep-models` command: one entry point.

The CLI is imported inside ``run`` so that a Ctrl-C landing while Python is still importing it ends
the command quietly with exit 130 (the documented "interrupted"), not with a traceback.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130


def run() -> None:
    try:
        from sourceprep_models.cli.app import main

        main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED)


if __name__ == "__main__":
    run()
