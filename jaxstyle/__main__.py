"""``python -m jaxstyle``: the same command line as the ``jaxstyle`` script."""

import sys

from jaxstyle.cli import main

sys.exit(main())
