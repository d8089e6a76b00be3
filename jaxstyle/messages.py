"""The library's errors as a command-line user reads them: each option named as its flag.

The library names an option by its `jaxstyle.StyleOptions` field (``tile_size``, ``size=21``);
only the command line knows the flags (``--tile-size``, ``--size 21``). Importable without JAX.
"""

from __future__ import annotations

import re

from jaxstyle.options import as_typed


def flag(name: str) -> str:
    """'tile_size' -> '--tile-size': the flag the command line generates for an option."""
    return "--" + name.replace("_", "-")


def as_flags(error: BaseException) -> str:
    """`error`'s message with the options it names written as flags: a leading ``field:``
    (any `StyleOptions` field) and, anywhere, the fields in `JaxstyleError.options`:
    ``size=21`` becomes ``--size 21`` and ``tile_size`` ``--tile-size``."""
    text = str(error)
    for name in getattr(error, "options", ()):
        text = re.sub(rf"(?<![\w-]){re.escape(name)}=", flag(name) + " ", text)
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag(name), text)
    return as_typed(text)
