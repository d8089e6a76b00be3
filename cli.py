"""Run jaxstyle from a checkout: ``python cli.py stylize CONTENT STYLE -o OUT``."""

import sys

from jaxstyle.cli import main

if __name__ == "__main__":
    sys.exit(main())
