"""How the options appear on a command line: one flag per option, and option names as flags.

The library names an option by its field (``style_weight``) and writes it in backquotes inside
help texts and messages (`` `style_weight` ``); this module, of the app layer, is where those
become the flags a user types (``--style-weight``). Importing it loads no JAX.
"""

from __future__ import annotations

import argparse
import re
from typing import NamedTuple

from jaxstyle.option_fields import HEADINGS
from jaxstyle.options import OPTION_FIELDS, StyleOptions, parser_of, preset_values

_METAVARS = {"int": "N", "int | None": "N", "float": "X", "float | None": "X", "str": "TEXT",
             "str | None": "TEXT"}
_NAMED = re.compile(r"`(\w+)`")


class Flag(NamedTuple):
    """How the command line offers one option (see `option_flags`)."""

    heading: str
    flag: str
    dest: str
    kwargs: dict


def flag_of(name: str) -> str:
    """'style_weight' -> '--style-weight'."""
    return "--" + name.replace("_", "-")


def as_flags(text: str) -> str:
    """A help text or message with each backquoted option name (`` `style_weight` ``) written
    as its flag (``--style-weight``); other backquoted words stay as they are."""
    return _NAMED.sub(lambda m: flag_of(m[1]) if m[1] in OPTION_FIELDS else m[0], text)


def option_flags(skip: tuple[str, ...] = (), defaults: dict | None = None,
                 video: bool = False) -> list[Flag]:
    """One ``--flag`` per option (`jaxstyle.options.OPTION_FIELDS`), heading by heading
    (`jaxstyle.option_fields.HEADINGS`): its heading and the `argparse.ArgumentParser.add_argument`
    keywords (type, choices, default, help with the default shown once). `defaults` overrides
    some defaults for one command; the "video" options are only offered with `video`."""
    found = []
    for f in sorted(OPTION_FIELDS.values(), key=lambda f: HEADINGS.index(f.metadata["heading"])):
        if f.name in skip or f.metadata["heading"] == "video" and not video:
            continue
        meta, default = f.metadata, (defaults or {}).get(f.name, f.default)
        text = as_flags(meta["help"])
        if f.type == "bool":
            kwargs = {"action": "store_true", "help": text}
        elif f.type == "bool | None":  # --x, --no-x, or neither: the preset's value
            listed = ", ".join(f"{'on' if value else 'off'} for {name}"
                               for name, value in preset_values(f.name).items())
            kwargs = {"action": argparse.BooleanOptionalAction, "default": default,
                      "help": f"{text} (default: set by --preset: {listed})"}
        else:
            # A help text that explains its default, or a None default, is not repeated.
            plain = "default" in text or default is None
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            if (by_preset := preset_values(f.name)) and default is None:
                listed = ", ".join(f"{value:g} for {name}" if isinstance(value, float)
                                   else f"{value} for {name}" for name, value in by_preset.items())
                plain, text = True, f"{text} (default: set by --preset: {listed})"
            kwargs = {
                "type": _flag_type(parser_of(f.name)),
                "default": default, "choices": meta.get("choices"),
                "metavar": meta.get("metavar") or (None if meta.get("choices")
                                                   else _METAVARS[f.type]),
                "help": text + ("" if plain else f" (default: {shown})"),
            }
        found.append(Flag(meta["heading"], flag_of(f.name), f.name, kwargs))
    return found


def _flag_type(parse):
    """`parse` with its ValueError turned into argparse's error (named like `parse`)."""

    def wrapped(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(as_flags(str(exc))) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def from_flags(values: dict) -> StyleOptions:
    """The options among parsed command-line values (other keys are ignored)."""
    return StyleOptions(**{k: v for k, v in values.items() if k in OPTION_FIELDS})


def as_typed(message: str) -> str:
    """'style_weight: ... `tile_size` ...' -> '--style-weight: ... --tile-size ...': the
    library names an option by its field, the user typed its flag."""
    name, sep, rest = message.partition(":")
    if sep and name in OPTION_FIELDS:
        return f"{flag_of(name)}:{as_flags(rest)}"
    return as_flags(message)


def error_line(error: BaseException) -> str:
    """`error`'s message as the command line prints it: a leading ``field:``, the backquoted
    option names and, anywhere, the fields in `JaxstyleError.options` written as flags
    (``size=21`` becomes ``--size 21``, ``tile_size`` ``--tile-size``). An option the message
    names with a value is written as a flag in that form only: elsewhere the same word is prose
    (``optimizer state ... or optimizer=adam``)."""
    text = str(error)
    for name in getattr(error, "options", ()):
        with_value = rf"(?<![\w-]){re.escape(name)}="
        if re.search(with_value, text):
            text = re.sub(with_value, flag_of(name) + " ", text)
        else:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", flag_of(name), text)
    return as_typed(text)
