"""What every option is made of: a dataclass field carrying its command-line heading, help,
parser and choices (`option`), the numeric options' `RANGES`, and the checks every option group
runs on creation (`OptionGroup`), raising `OptionsError` named by the option."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import field
from typing import NamedTuple

from jaxstyle.choices import MAX_ITERATIONS, MAX_SEED, MAX_SIDE, MAX_STYLE_SCALE, MAX_WEIGHT
from jaxstyle.errors import JaxstyleError

HEADINGS = (
    "output and size",
    "content and style",
    "optimizer",
    "colour and regions",
    "scales and tiles",
    "performance",
    "run control",
    "video",
)
"""The headings the command line's help sorts the options under (each field's ``heading``).

Help texts and messages name other options in backquotes (`` `iterations` ``), which the app
layer writes as flags (`jaxstyle.flags.as_flags`)."""


class OptionsError(JaxstyleError):
    """An option has an invalid value; the message names the option."""


def option(default, heading: str, help: str, *, parse=None, choices=None, metavar=None):
    """A dataclass field carrying its command-line heading (one of `HEADINGS`), help, parser and
    choices."""
    assert heading in HEADINGS, heading
    metadata = {
        "heading": heading,
        "help": help,
        "parse": parse,
        "choices": choices,
        "metavar": metavar,
    }
    if isinstance(default, (list, dict)):
        raise TypeError("mutable default")
    return field(default=default, metadata=metadata)


def parse_names(text: str) -> tuple[str, ...]:
    """'relu1_1,relu2_1' -> ('relu1_1', 'relu2_1')."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_ints(text: str) -> tuple[int, ...]:
    """'256,512' -> (256, 512)."""
    try:
        return tuple(int(part) for part in text.split(","))  # an empty part is an error
    except ValueError:
        raise OptionsError(f"expected comma-separated whole numbers, got {text!r}") from None


def parse_floats(text: str) -> tuple[float, ...]:
    """'0.3,0.7' -> (0.3, 0.7)."""
    try:
        return tuple(float(part) for part in text.split(","))  # an empty part is an error
    except ValueError:
        raise OptionsError(f"expected comma-separated numbers, got {text!r}") from None


class Range(NamedTuple):
    """The values a numeric option may take (each element of a list option)."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def holds(self, value) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def describe(self) -> str:
        return (f"in {'(' if self.open_low else '['}{_bound(self.low)}, {_bound(self.high)}"
                f"{')' if self.open_high else ']'}")


def _bound(value: float) -> str:
    """A range's end as a person reads it: whole numbers in full up to ten digits."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e10 else f"{value:g}"


_WEIGHT = Range(0, MAX_WEIGHT)
RANGES = {
    "size": Range(0, MAX_SIDE),
    "iterations": Range(0, MAX_ITERATIONS),
    "final_pass": Range(0, MAX_ITERATIONS),
    "style_strength": _WEIGHT,
    "content_weight": _WEIGHT,
    "style_weight": _WEIGHT,
    "tv_weight": _WEIGHT,
    "style_blend_weights": _WEIGHT,
    "style_scale": Range(0, MAX_STYLE_SCALE, open_low=True),
    "style_scales": Range(0, MAX_STYLE_SCALE, open_low=True),
    "style_layer_weights": _WEIGHT,
    "learning_rate": Range(0, MAX_WEIGHT, open_low=True),
    "lbfgs_history": Range(1, 10_000),
    "stop_tolerance": Range(0, 1),
    "stop_change": Range(0, 255),
    "seed": Range(0, MAX_SEED),
    "progress_every": Range(1, MAX_ITERATIONS),
    "redraw_every": Range(1, MAX_ITERATIONS),
    "histogram_weight": _WEIGHT,
    "content_alpha": Range(0, 1),
    "scales": Range(1, MAX_SIDE),
    "scale_iterations": Range(0, MAX_ITERATIONS),
    "coarsest": Range(0, MAX_SIDE),
    "finest_iterations": Range(0, MAX_ITERATIONS),
    "ema_decay": Range(0, 1, open_high=True),
    "tile_size": Range(32, MAX_SIDE),
    "tile_overlap": Range(1, MAX_SIDE),
    "memory_limit_gb": Range(0, 1e6),
    "temporal_weight": _WEIGHT,
    "temporal_frames": Range(1, 1000),
    "first_frame_iterations": Range(0, MAX_ITERATIONS),
    "passes": Range(1, 100),
    "pass_batch": Range(1, 4096),
}
"""What each numeric option may be: bounded to what the code can compute (the command line,
the Python API and the studio's form all check against these)."""


class OptionGroup:
    """What every option group does on creation: lists become tuples and NumPy numbers Python's,
    each field is checked against its type, choices and `RANGES`, then against `_check`."""

    def __post_init__(self):
        check_fields(self, dataclasses.fields(self))
        self._check()

    def _check(self) -> None:
        """What a range cannot say about this group's values."""


def check_fields(owner, fields) -> None:
    """Each of `fields` of `owner` (a frozen dataclass) of its type (lists become tuples), among
    its choices and within its `RANGES`; the message names the option as the user gave it."""
    for f in fields:
        value = getattr(owner, f.name)
        if isinstance(value, list):
            value = tuple(value)
            object.__setattr__(owner, f.name, value)
        problem = _type_problem(value, f.type)
        if problem:
            raise OptionsError(f"{f.name}: must be {problem} (got {value!r})")
        plain = _python_numbers(value)  # NumPy scalars as Python numbers (reports are JSON)
        if plain is not value:
            object.__setattr__(owner, f.name, plain)
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise OptionsError(f"{f.name}: expected one of {choices}, got {value!r}")
    for f in fields:
        bounds, value = RANGES.get(f.name), getattr(owner, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if bounds and value is not None and not all(bounds.holds(v) for v in values):
            shown = ",".join(map(str, values))
            raise OptionsError(f"{f.name}: must be {bounds.describe()} (got {shown})")


def require(owner, checks: dict[str, tuple[bool, str]]) -> None:
    """``{name: (valid, what a valid value is)}``: the first invalid one of `owner`'s options
    raised, named."""
    for name, (ok, requirement) in checks.items():
        if not ok:
            value = getattr(owner, name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise OptionsError(f"{name}: must be {requirement} (got {shown})")


def _type_problem(value, annotation: str) -> str:
    """What `value` should be for a field annotated `annotation` ("int | None", "tuple[float,
    ...]", ...), or "" when it is that."""
    if annotation.endswith(" | None"):
        if value is None:
            return ""
        annotation = annotation.removesuffix(" | None")
    if annotation.startswith("tuple["):
        element = annotation[len("tuple["):].split(",")[0]
        plural = f"comma-separated {_PLURALS[element]}"
        if not isinstance(value, tuple):
            return plural
        return plural if any(_type_problem(v, element) for v in value) else ""
    if isinstance(value, bool) or annotation == "bool":
        ok = isinstance(value, bool) and annotation == "bool"
    elif annotation == "int":
        ok = isinstance(value, numbers.Integral)
    elif annotation == "float":
        ok = isinstance(value, numbers.Real) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    return "" if ok else _WORDS[annotation]


def _python_numbers(value):
    """NumPy integers and floats (also inside tuples) as Python's int and float."""
    if isinstance(value, tuple):
        plain = tuple(_python_numbers(v) for v in value)
        return value if all(a is b for a, b in zip(plain, value)) else plain
    if isinstance(value, numbers.Integral) and not isinstance(value, (int, bool)):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
        return float(value)
    return value


_WORDS = {"int": "a whole number", "float": "a finite number", "str": "text",
          "bool": "true or false"}
_PLURALS = {"int": "whole numbers", "float": "finite numbers", "str": "names"}
