"""The page's form, made from `StyleOptions`, and a request's values back into options.

Which options the page offers is chosen here; everything about each of them (its kind, default,
help, choices, heading) is read from the option's field, so the page restates nothing.
Values come back as JSON gives them and are parsed by `jaxstyle.options.parse_value`, the
parser the command line uses, so a value the CLI refuses is refused here with the same message.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from jaxstyle.choices import SWEEP_ITERATIONS, SWEEP_SIZE
from jaxstyle.flags import as_flags, flag_of, option_flags
from jaxstyle.option_fields import RANGES
from jaxstyle.options import OPTION_FIELDS, StyleOptions, parse_value, preset_values

FORM_OPTIONS = ("preset", "size", "iterations", "style_strength", "style_weight",
                "content_weight", "style_loss", "original_colors", "content_alpha")
"""The options a person changes most, in the order the page shows them."""

BLEND_OPTION = "style_blend_weights"
"""Shown as one weight beside each style image rather than as a field of its own."""

SWEEP_FIXED = ("size", "iterations")
"""A sweep sets these for its cells (``jaxstyle sweep``'s defaults), so they are not swept."""


def field_names() -> frozenset[str]:
    """Every option's name."""
    return frozenset(OPTION_FIELDS)


def _kind(field) -> str:
    """How the page edits a field: 'choice', 'bool', 'int', 'float', 'floats' or 'text'."""
    if field.metadata.get("choices"):
        return "choice"
    base = field.type.removesuffix(" | None")
    return {"bool": "bool", "int": "int", "float": "float",
            "tuple[float, ...]": "floats"}.get(base, "text")


def _plain(value):
    """A default as JSON writes it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def field_schema(name: str) -> dict:
    """What the page needs to offer option `name`: kind, default (and, for an option a preset
    fills in, each preset's value), help, choices and heading, all read from its field."""
    field = OPTION_FIELDS[name]
    meta = field.metadata
    by_preset = {preset: _plain(value) for preset, value in preset_values(name).items()}
    bounds = RANGES.get(name)
    return {"name": name, "flag": flag_of(name), "kind": _kind(field),
            "default": _plain(field.default), "optional": field.type.endswith("| None"),
            "by_preset": by_preset, "help": as_flags(meta["help"]),
            "choices": list(meta["choices"] or ()), "group": meta["heading"],
            "min": None if bounds is None else bounds.low,
            "max": None if bounds is None else bounds.high,
            "range": None if bounds is None else bounds.describe()}


def form_schema() -> dict:
    """The whole form: its fields in order, the per-style weight, and what a sweep fixes."""
    shown = [name for name in FORM_OPTIONS if name in OPTION_FIELDS]
    return {
        "fields": [field_schema(name) for name in shown],
        "blend": field_schema(BLEND_OPTION),
        "sweep": {"size": SWEEP_SIZE, "iterations": SWEEP_ITERATIONS,
                  "options": [n for n in shown if n not in SWEEP_FIXED]},
    }


def options_from_values(values: dict) -> StyleOptions:
    """`StyleOptions` from ``{option: value}`` as JSON gives them (a number, a string, a
    boolean or a list); None or an empty string leaves the option's default.

    Raises:
      OptionsError: an unknown option, a value its parser refuses or one `StyleOptions`
        refuses; the message names the option.
    """
    parsed = {}
    for name, value in values.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        parsed[name] = parse_value(name, text)
    return StyleOptions(**parsed)


def settings(options: StyleOptions) -> dict:
    """The options a person set: those that differ from what their preset alone gives."""
    base = StyleOptions(preset=options.preset).by_name()
    chosen = {k: _plain(v) for k, v in options.by_name().items() if v != base[k]}
    return {"preset": options.preset, **chosen}


def values(options: StyleOptions) -> dict:
    """Every option as JSON writes it (to fill the form again: 'load these settings')."""
    return {k: _plain(v) for k, v in options.by_name().items()}


def command_line(options: StyleOptions, content: str, styles: Sequence[str], output: str,
                 weights: str | None = None, command: str = "stylize",
                 extra: Sequence[str] = (), style_masks: Sequence[str] = (),
                 content_mask: str | None = None) -> str:
    """The ``jaxstyle stylize`` (or `command`) line that makes the same run from files, with
    `extra` words at the end; `style_masks` (one file per style) and `content_mask` are files
    too."""
    chosen = settings(options)
    words = ["jaxstyle", command, content, *styles, "-o", output]
    for spec in option_flags(video=True):
        if spec.dest not in chosen or spec.dest == "preset" and options.preset == OPTION_FIELDS[
                "preset"].default:
            continue
        value = chosen[spec.dest]
        if spec.kwargs.get("action") == "store_true":
            words += [spec.flag] if value else []
        else:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            words += [spec.flag, text]
    if style_masks:
        words += ["--style-masks", *style_masks]
    if content_mask:
        words += ["--content-mask", content_mask]
    if weights:
        words += ["--weights", weights]
    return shlex.join([*words, *extra])
