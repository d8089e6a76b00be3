"""What one request to the studio may hold, checked before any work is done for it.

Every collection a request carries is bounded, so that no request, however small its body,
asks for work that grows faster than it: the body's bytes and its JSON nesting, the numbers in
it (finite; whole and in range where they count something), the style images of a run, a
sweep's axes, values per axis and cells (computed, not built), and the job ids in paths (ASCII
digits, a few of them). A request over a limit is refused with a message naming the limit.
"""

from __future__ import annotations

import json
import math
import re

from jaxstyle.errors import JaxstyleError
from jaxstyle.option_fields import Range

MAX_JSON_BYTES = 16 * 1024
"""The largest JSON body: a run with every style and option the page offers is under 2 KiB."""

MAX_JSON_DEPTH = 6
"""The deepest nesting of a JSON body: the page's deepest is 3 (an option's list of numbers
in the options in the request); Python's parser recurses per level, so 30,000 brackets would
raise RecursionError."""

MAX_STYLES = 16
"""The most style images a run takes: each is a forward pass per scale and targets kept in
memory (200 copies of one style took 159 s at 64 px before this limit)."""

MAX_SWEEP_AXES = 2
"""A sweep varies one option (a row) or two (a grid), as `jaxstyle.sweeps.grid` takes."""

MAX_AXIS_VALUES = 32
"""The most values of one swept option."""

MAX_SWEEP_CELLS = 100
"""The most cells of a sweep (a 10 x 10 contact sheet): each is a whole run, and a 3 x 3 sweep
at the sweep's size takes minutes on a CPU."""

MAX_JOB_ID_DIGITS = 9
"""Job ids are numbers of at most this many ASCII digits (a session numbers its jobs from 1)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class TooLarge(JaxstyleError):
    """A request body over its limit."""


def nesting(text: str) -> int:
    """How deep the arrays and objects of JSON `text` nest (brackets inside strings do not
    count; `text` need not be valid JSON)."""
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", _STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JaxstyleError(f"the request holds {text[:40]}, not a finite number")
    return value


def _no_constant(text: str):
    raise JaxstyleError(f"the request holds {text}, not a finite number")


def parse_json(body: bytes) -> dict:
    """A request body as a JSON object (empty: ``{}``).

    Raises:
      TooLarge: over `MAX_JSON_BYTES`.
      JaxstyleError: not UTF-8 JSON, nested deeper than `MAX_JSON_DEPTH`, a number that is not
        finite (``NaN``, ``Infinity``, ``1e400``), or not an object.
    """
    if len(body) > MAX_JSON_BYTES:
        raise TooLarge(f"{len(body):,} bytes is over the limit of {MAX_JSON_BYTES:,}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise JaxstyleError("the request is not JSON (not UTF-8)") from None
    if nesting(text) > MAX_JSON_DEPTH:
        raise JaxstyleError(f"the request is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(text or "{}", parse_float=_finite, parse_constant=_no_constant)
    except JaxstyleError:
        raise
    except ValueError:
        raise JaxstyleError("the request is not JSON") from None
    if not isinstance(data, dict):
        raise JaxstyleError("the request must be a JSON object")
    return data


def job_id(text: str) -> int | None:
    """A job id from a path: 1 to `MAX_JOB_ID_DIGITS` ASCII digits, else None (``"²"`` and
    ``"٣"`` are digits to `str.isdigit`, and `int` reads the second)."""
    if 0 < len(text) <= MAX_JOB_ID_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def whole_number(name: str, value, bounds: Range) -> int:
    """`value` from JSON as a whole number within `bounds`.

    Raises:
      JaxstyleError: a boolean, a string, a fraction or out of `bounds`; the message names
        `name` and the range.
    """
    whole = (isinstance(value, int) and not isinstance(value, bool)
             or isinstance(value, float) and value.is_integer())
    if not whole or not bounds.holds(value):
        raise JaxstyleError(f"{name}: must be a whole number {bounds.describe()} "
                            f"(got {repr(value)[:40]})")
    return int(value)


def style_ids(value) -> tuple[str, ...]:
    """A run's style images: 1 to `MAX_STYLES` ids.

    Raises:
      JaxstyleError: none, more than `MAX_STYLES`, or not a list of strings.
    """
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise JaxstyleError("choose at least one style image")
    if len(value) > MAX_STYLES:
        raise JaxstyleError(f"a run takes at most {MAX_STYLES} style images (got {len(value)})")
    return tuple(value)


def mask_ids(value, styles: int) -> tuple[str | None, ...] | None:
    """A run's style masks: None (no regions) or one mask id or None (everywhere) per style.

    Raises:
      JaxstyleError: not a list of that many ids and nulls.
    """
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != styles
            or not all(m is None or isinstance(m, str) for m in value)):
        raise JaxstyleError(f"style_masks: give one mask (or null) for each of the {styles} "
                            "style images")
    return tuple(value) if any(m is not None for m in value) else None


def sweep_texts(value) -> list[str]:
    """A sweep's ``vary``: one or two ``OPTION=VALUE,...`` strings (one string: one axis).

    Raises:
      JaxstyleError: missing, more than `MAX_SWEEP_AXES`, or not strings.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise JaxstyleError("sweep: say which option to vary and its values")
    if len(value) > MAX_SWEEP_AXES:
        raise JaxstyleError(f"sweep: one or two options can be swept (got {len(value)})")
    return value


def check_axes(axes) -> None:
    """Refuses parsed ``(option, values)`` axes with too many values or cells, before a grid
    of them is built.

    Raises:
      JaxstyleError: an axis over `MAX_AXIS_VALUES` values, or more than `MAX_SWEEP_CELLS`
        cells in all.
    """
    for name, values in axes:
        if len(values) > MAX_AXIS_VALUES:
            raise JaxstyleError(f"sweep: {name} has {len(values)} values; a sweep takes at most "
                                f"{MAX_AXIS_VALUES} values an option")
    cells = math.prod(len(values) for _, values in axes)
    if cells > MAX_SWEEP_CELLS:
        shape = " x ".join(str(len(values)) for _, values in axes)
        raise JaxstyleError(f"sweep: {shape} is {cells} cells; a sweep runs at most "
                            f"{MAX_SWEEP_CELLS} cells")
