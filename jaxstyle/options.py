"""Every hyper-parameter of a stylization run, with its default: `StyleOptions`, a preset and a
seed beside five small frozen groups (`ObjectiveOptions`, `OptimizationOptions`, `PlanOptions`,
`PerformanceOptions`, `VideoOptions`).

Each field carries its help text, heading, parser and choices; `jaxstyle.flags` makes the command
line's flags from them, so the two cannot drift. Defaults follow jcjohnson/neural-style where it
has an equivalent.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from jaxstyle.choices import (
    AUTO_WINOGRAD_SIZE,
    CONTENT_LOSSES,
    CONVOLUTION_OPTIONS,
    FLOWS,
    INITS,
    LINESEARCHES,
    MAX_ITERATIONS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STYLE_SCALE,
    MAX_WEIGHT,
    NEURAL_NEIGHBOUR,
    OPTIMIZERS,
    ORIGINAL_COLORS,
    PARAMETRIZATIONS,
    POOLINGS,
    PRECISIONS,
    PRESETS,
    STYLE_LOSSES,
    WEIGHT_NORMALIZATIONS,
)
from jaxstyle.errors import JaxstyleError

if TYPE_CHECKING:
    from jaxstyle.losses import LossConfig, LossWeights
    from jaxstyle.steps import OptimizerConfig

LBFGS_STEP = 1.0  # neural-style's unit step
ADAM_LEARNING_RATE = 0.02  # in [0, 1] pixel units
FIRST_STEP = 0.05
"""With a line search on the relative objective: the largest pixel change (in [0, 1] units)
L-BFGS's first step tries; later steps take their length from the curvature L-BFGS has seen."""

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


BALANCED_STYLE_STRENGTH = 20.0
"""The balanced preset's style strength: calibrated (docs/how-it-works.md, "How the default was
chosen") so that the subject stays plain and the style is unmistakable across pairs and sizes;
40 for one scale, 20 since the coarse-to-fine schedule, which paints more at equal strength."""

COARSEST = 128
"""The balanced preset's coarsest scale (longest side, px): below it VGG's deepest style and
content layers see too few positions to place a subject (crowsonkb's style-transfer-pytorch
also starts at 128 px); docs/benchmarks.md, "Time to a picture"."""
FINEST_ITERATIONS = 50
"""The balanced preset's most iterations at the full size; each coarser scale may run twice the
next finer's (docs/benchmarks.md, "Time to a picture")."""
_ONE_SCALE = {"coarsest": 0, "finest_iterations": 0}
NEIGHBOUR_TV_WEIGHT = 0.02
"""The neural-neighbour preset's TV weight (NNST has none; its Laplacian-pyramid variable
smooths instead): enough to calm single-pixel noise, small beside the style term."""
CONTENT_ALPHA = 0.75
"""The neural-neighbour preset's default content share, NNST's own default (its alpha)."""

_NEURAL_STYLE = {
    "objective": {"content_weight": 5.0, "style_weight": 100.0, "tv_weight": 1e-3,
                  "weight_normalization": "neural-style", "style_strength": 1.0},
    "video": {"temporal_weight": 1e3},
}
PRESET_VALUES = {
    "balanced": {
        "objective": {"content_weight": 1.0, "style_weight": 1.0, "tv_weight": 0.3,
                      "weight_normalization": "relative",
                      "style_strength": BALANCED_STYLE_STRENGTH},
        "optimization": {"lbfgs_linesearch": "zoom", "stop_tolerance": 0.0, "stop_change": 0.1},
        "plan": {"coarsest": COARSEST, "finest_iterations": FINEST_ITERATIONS},
        "performance": {"convolution": "auto"},
        "video": {"temporal_weight": 30.0},
    },
    "neural-style": {
        **_NEURAL_STYLE,
        "optimization": {"lbfgs_linesearch": "none", "stop_tolerance": 0.0, "stop_change": 0.0},
        "plan": _ONE_SCALE, "performance": {"convolution": "direct"},
    },
    # fast's stall rule, 3e-4 (0.03% per iteration), stopped tubingen/starry_night at 384 px
    # within 3.2% of 1e-4's loss at 0.62x its iterations (docs/how-it-works.md, "Why the
    # presets are what they are"; chelsea/marbled 3.1%).
    "fast": {
        **_NEURAL_STYLE,
        "optimization": {"lbfgs_linesearch": "zoom", "stop_tolerance": 3e-4, "stop_change": 0.0},
        "plan": _ONE_SCALE, "performance": {"convolution": "auto"},
    },
    # The neighbour term is a mean cosine distance, O(0.1-1) like the relative objective's
    # terms: the balanced preset's optimizer and schedule; no content term (content_alpha is
    # the knob, as in NNST) and a TV weight that keeps it at a few percent of the style term.
    NEURAL_NEIGHBOUR: {
        "objective": {"content_weight": 0.0, "style_weight": 1.0, "tv_weight": NEIGHBOUR_TV_WEIGHT,
                      "weight_normalization": "relative", "style_strength": 1.0},
        "optimization": {"lbfgs_linesearch": "zoom", "stop_tolerance": 0.0, "stop_change": 0.1},
        "plan": {"coarsest": COARSEST, "finest_iterations": FINEST_ITERATIONS},
        "performance": {"convolution": "auto"},
        "video": {"temporal_weight": 0.0},
    },
}
"""What each of `PRESETS` sets, group by group, among the options left None (see
`StyleOptions`)."""


def _option(default, heading: str, help: str, *, parse=None, choices=None, metavar=None):
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


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


_SIMPLE_TYPES = {
    "int": int,
    "float": float,
    "str": str,
    "bool": _parse_bool,
    "int | None": int,
    "float | None": float,
    "str | None": str,
}


def parser_of(name: str):
    """The function that reads option `name` from text (``parse_ints``, `float`, ...)."""
    f = OPTION_FIELDS[name]
    return f.metadata.get("parse") or _SIMPLE_TYPES[f.type]


def parse_value(name: str, text: str):
    """The value of option `name` written as `text` on a command line ("100", "gram", "true").

    Raises:
      OptionsError: an unknown option (the message lists them), an unparsable value, or one
        outside the option's choices.
    """
    if name not in OPTION_FIELDS:
        raise OptionsError(f"unknown option {name!r}; options are "
                           f"{', '.join(sorted(OPTION_FIELDS))}")
    meta = OPTION_FIELDS[name].metadata
    try:
        value = parser_of(name)(text)
    except ValueError as exc:
        raise OptionsError(f"{name}: {text!r} is not a valid value ({exc})") from None
    if meta.get("choices") and value not in meta["choices"]:
        raise OptionsError(f"{name}: expected one of {meta['choices']}, got {value!r}")
    return value


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


class _Group:
    """What every option group does on creation: lists become tuples and NumPy numbers Python's,
    each field is checked against its type, choices and `RANGES`, then against `_check`."""

    def __post_init__(self):
        _check_fields(self, dataclasses.fields(self))
        self._check()

    def _check(self) -> None:
        """What a range cannot say about this group's values."""


def _check_fields(owner, fields) -> None:
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


def _require(owner, checks: dict[str, tuple[bool, str]]) -> None:
    """``{name: (valid, what a valid value is)}``: the first invalid one of `owner`'s options
    raised, named."""
    for name, (ok, requirement) in checks.items():
        if not ok:
            value = getattr(owner, name)
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise OptionsError(f"{name}: must be {requirement} (got {shown})")


@dataclass(frozen=True)
class ObjectiveOptions(_Group):
    """What the picture should be: the loss terms, their weights and layers, the style
    statistics, and the colours. A weight left None is the preset's (see `StyleOptions`)."""

    style_strength: float | None = _option(
        None,
        "content and style",
        "how strongly the style repaints the photo: 0 keeps the photo, larger values paint "
        "more of it away (multiplies the style weight)",
    )
    content_weight: float | None = _option(
        None, "content and style", "weight of the content loss (w_c)")
    style_weight: float | None = _option(
        None, "content and style", "weight of the style loss (w_s)")
    tv_weight: float | None = _option(
        None, "content and style", "weight of the total-variation smoothness loss (w_tv)"
    )
    style_blend_weights: tuple[float, ...] | None = _option(
        None,
        "content and style",
        "comma-separated weight per style image, normalised to sum 1 (default: equal)",
        parse=parse_floats,
        metavar="W,W,...",
    )
    style_scale: float = _option(
        1.0,
        "content and style",
        "style images are resized to this times the output size before their Gram matrices",
    )
    content_layers: tuple[str, ...] = _option(
        ("relu4_2",),
        "content and style",
        "comma-separated layers for the content loss (names as in neural-style: "
        "conv5_4/relu5_4 exist in VGG19, VGG16 stops at conv5_3)",
        parse=parse_names,
        metavar="LAYERS",
    )
    style_layers: tuple[str, ...] = _option(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "content and style",
        "comma-separated layers for the style loss",
        parse=parse_names,
        metavar="LAYERS",
    )
    style_layer_weights: tuple[float, ...] | None = _option(
        None,
        "content and style",
        "comma-separated multiplier per style layer (default: 1 each)",
        parse=parse_floats,
        metavar="W,W,...",
    )
    pooling: str = _option("max", "content and style", "pooling in the network", choices=POOLINGS)
    style_loss: str = _option(
        "gram",
        "content and style",
        "style statistics: neural-style's Gram matrices; mean+covariance compared by the "
        "2-Wasserstein distance (crowsonkb's); the whole feature distribution along random "
        "directions (sliced_wasserstein, Heitz et al. 2021); Gram plus per-channel histograms "
        "(gram_histogram, Risser et al. 2017)",
        choices=STYLE_LOSSES,
    )
    redraw_every: int = _option(
        10,
        "content and style",
        "with `style_loss` sliced_wasserstein: iterations between redraws of its random "
        "directions (L-BFGS needs the objective fixed in between)",
    )
    content_alpha: float = _option(
        CONTENT_ALPHA,
        "content and style",
        "with `preset` neural-neighbour: the content's share, from 0 to 1, of the hypercolumns "
        "each output position's nearest style hypercolumn is searched for (the rest is the "
        "output's own): 1 keeps the most content, 0 gives the most style (NNST's alpha)",
    )
    histogram_weight: float = _option(
        1.0,
        "content and style",
        "with `style_loss` gram_histogram: the histogram term's weight relative to Gram's",
    )
    content_loss: str = _option(
        "mse",
        "content and style",
        "'mse': neural-style's squared feature difference; 'self_similarity': STROTSS's "
        "comparison of feature self-similarities, which keeps layout and frees colours (it needs "
        "other weights: see docs/guide/losses.md)",
        choices=CONTENT_LOSSES,
    )
    weight_normalization: str | None = _option(
        None,
        "content and style",
        "'relative': every layer's term is divided by its target's own energy and TV is "
        "measured in pixels, so weights mean the same for any network, pair and size; "
        "'neural-style' keeps its formulas; 'resolution' is neural-style's with the TV term "
        "scaled so that the same weights behave alike at any output size (equal at 512 px)",
        choices=WEIGHT_NORMALIZATIONS,
    )
    style_scales: tuple[float, ...] | None = _option(
        None,
        "content and style",
        "comma-separated scale per style image (overrides `style_scale`)",
        parse=parse_floats,
        metavar="S,S,...",
    )
    original_colors: str = _option(
        "none",
        "colour and regions",
        "keep the content's colours: 'luminance' optimizes luminance only (Gatys et al. "
        "2017); 'swap' replaces the result's chroma afterwards (neural-style); 'oklab' "
        "keeps the result's lightness and gives it the content's chroma moved to the style's "
        "palette, in OkLab (Neural Neighbor Style Transfer's closing step)",
        choices=ORIGINAL_COLORS,
    )
    match_style_colors: bool = _option(
        False,
        "colour and regions",
        "recolour the style images to the content's colour mean and covariance first",
    )

    def _check(self) -> None:
        _require(self, {
            "style_scales": (self.style_scales is None or len(self.style_scales) > 0,
                             "one scale per style image"),
            "style_blend_weights": (self.style_blend_weights is None
                                    or sum(self.style_blend_weights) > 0, "not all 0"),
        })


@dataclass(frozen=True)
class OptimizationOptions(_Group):
    """How the picture is optimized: the optimizer and its step, where it starts, when a scale
    stops, and which iterate is the output. An option left None is the preset's."""

    iterations: int = _option(
        1000, "optimizer", "optimizer iterations (neural-style's -num_iterations)"
    )
    init: str = _option(
        "content", "optimizer", "initial image: the content image or seeded noise", choices=INITS
    )
    optimizer: str = _option(
        "lbfgs", "optimizer", "jaxopt's L-BFGS or optax's Adam", choices=OPTIMIZERS
    )
    learning_rate: float | None = _option(
        None,
        "optimizer",
        f"L-BFGS step size (default {LBFGS_STEP:g}, neural-style's unit step) or Adam's "
        f"learning rate in pixel units of [0, 1] (default {ADAM_LEARNING_RATE:g})",
    )
    lbfgs_history: int = _option(100, "optimizer",
                                 "L-BFGS history size (default: 100, neural-style's)")
    lbfgs_linesearch: str | None = _option(
        None,
        "optimizer",
        "L-BFGS line search: 'none' takes unit steps like neural-style (which can go far "
        "uphill); 'zoom' (strong Wolfe conditions, searching both ways) costs one evaluation "
        "when L-BFGS's own step is accepted; 'backtracking' can only shorten a step; "
        "'hager-zhang' searches both ways at more evaluations",
        choices=LINESEARCHES,
    )
    stop_tolerance: float | None = _option(
        None,
        "optimizer",
        "stop a scale early once the loss fell by less than this fraction per iteration over "
        "the last 10 (0: always run `iterations`, which is then the most a scale runs)",
    )
    stop_change: float | None = _option(
        None,
        "optimizer",
        "stop a scale early once the picture changes by less than this many grey levels (of "
        "255) per iteration, on average over pixels and the last 10 iterations (0: never)",
    )
    parametrization: str = _option(
        "pixels",
        "optimizer",
        "what the optimizer changes: the image's pixels, or the bands of its Laplacian "
        "pyramid (a step on a coarse band moves a whole region; STROTSS's and Neural Neighbor "
        "Style Transfer's variable)",
        choices=PARAMETRIZATIONS,
    )
    ema_decay: float = _option(
        0.0,
        "optimizer",
        "output an exponential moving average of the iterates with this decay (e.g. 0.99; 0: off)",
    )
    keep_best: bool = _option(
        False, "optimizer", "output the iterate with the lowest loss, not the last"
    )

    def _check(self) -> None:
        if self.ema_decay and self.keep_best:
            raise OptionsError("ema_decay and keep_best: choose one way to pick the output")


@dataclass(frozen=True)
class PlanOptions(_Group):
    """At what sizes the run works: the output's, the coarse-to-fine scales and their
    iterations, and tiles. An option left None is the preset's."""

    size: int = _option(
        512, "output and size", "longest side of the output in pixels (0 keeps the content's size)"
    )
    scales: tuple[int, ...] | None = _option(
        None,
        "scales and tiles",
        "coarse-to-fine sizes, e.g. 256,512,1024; each starts from the previous result "
        "upsampled (overrides `size`)",
        parse=parse_ints,
        metavar="SIZE,SIZE,...",
    )
    scale_iterations: tuple[int, ...] | None = _option(
        None,
        "scales and tiles",
        "iterations at each of `scales` (one number for all; default: `iterations` each)",
        parse=parse_ints,
        metavar="N,N,...",
    )
    coarsest: int | None = _option(
        None,
        "scales and tiles",
        "coarse to fine without `scales`: the run starts at the smallest halving of `size` "
        "that is at least this (at half of `size`, down to 64 px, for smaller outputs) and "
        "doubles up to `size`, each scale starting from the one before with the photo's finer "
        "detail added (0: one scale at `size`)",
        metavar="PIXELS",
    )
    finest_iterations: int | None = _option(
        None,
        "scales and tiles",
        "coarse to fine without `scales`: the most iterations at `size` itself; each coarser "
        "scale may run twice as many as the next finer, and every scale at most `iterations` "
        "(0: `iterations` at every scale)",
    )
    tile_size: int | None = _option(
        None,
        "scales and tiles",
        "render outputs larger than this many pixels a side in overlapping tiles of this "
        "size (for outputs that do not fit in memory)",
        metavar="PIXELS",
    )
    tile_overlap: int = _option(
        64, "scales and tiles", "overlap between tiles in pixels, feathered to hide seams"
    )

    def _check(self) -> None:
        scales, counts = self.scales or (), self.scale_iterations
        _require(self, {
            "tile_overlap": (self.tile_size is None or 2 * self.tile_overlap < self.tile_size,
                             "under half of `tile_size`"),
            "scales": (self.scales is None or len(scales) > 0, "sizes, e.g. 256,512"),
            "scale_iterations": (counts is None or len(counts) in (1, len(scales)),
                                 f"one count, or one per scale ({len(scales)})" if scales
                                 else "one count when `scales` is not given"),
        })


@dataclass(frozen=True)
class PerformanceOptions(_Group):
    """How the run computes what it optimizes: numeric precision, the convolution algorithm,
    the memory check, and the chunk between progress reports (which never changes a result)."""

    progress_every: int = _option(
        10, "run control", "iterations between progress reports (one compiled chunk); it never "
        "changes a result"
    )
    memory_limit_gb: float | None = _option(
        None,
        "performance",
        "refuse runs whose estimated peak memory exceeds this (default: the memory free "
        "on the device; 0: never refuse)",
    )
    precision: str = _option(
        "float32",
        "performance",
        "'bfloat16' runs the convolutions in bfloat16 (Gram matrices and losses stay "
        "float32); a large gain on GPUs and TPUs, none on CPUs (XLA:CPU convolves in float32) "
        "unless with `convolution` winograd on a CPU with bfloat16 instructions",
        choices=PRECISIONS,
    )
    convolution: str | None = _option(
        None,
        "performance",
        "'winograd' runs the layers of 128+ channels with Winograd's algorithm on CPUs: "
        "about a quarter less time per evaluation at 384 and 512 px, float32-level "
        "differences, but slower compilation the first time at each size (15-19 s in all "
        "for a fast run at 384-512 px on 2 cores, 3 s from the cache after); "
        "with `precision` bfloat16 its products run in bfloat16 (benchmarks/bfloat16.py "
        "measures whether that pays on a CPU); "
        f"'auto': Winograd on a CPU in float32 for outputs of {AUTO_WINOGRAD_SIZE} px or more "
        "(or the content's size), direct elsewhere",
        choices=CONVOLUTION_OPTIONS,
    )


@dataclass(frozen=True)
class VideoOptions(_Group):
    """What `jaxstyle.video` adds for a sequence of frames (Ruder et al. 2016)."""

    temporal_weight: float | None = _option(
        None,
        "video",
        "weight of the temporal loss that keeps each frame close to the previous stylized frame "
        "warped along the optical flow (Ruder et al. 2016); 0: independent frames",
    )
    flow: str = _option(
        "dis",
        "video",
        "optical flow (OpenCV): DIS (fast), Farneback, or DeepFlow (the paper's; needs "
        "opencv-contrib-python-headless)",
        choices=FLOWS,
    )
    temporal_frames: tuple[int, ...] = _option(
        (1,),
        "video",
        "earlier frames each frame is held to: 1 (the previous frame, short-term), or e.g. "
        "1,2,4 for long-term consistency (Ruder et al. 2016)",
        parse=parse_ints,
        metavar="N,N,...",
    )
    first_frame_iterations: int | None = _option(
        None,
        "video",
        "iterations for the first frame, which starts from scratch (default: twice "
        "`iterations`); later frames start from the previous one warped",
    )
    passes: int = _option(
        1,
        "video",
        "1: frame after frame, each from the previous stylized one; N >= 2: N passes over all "
        "frames in alternating directions, each frame held to its neighbour from the pass "
        "before, so a pass's frames run as batches sharded over all devices",
    )
    pass_batch: int = _option(8, "video", "with `passes` N >= 2: frames per batch")

    def _check(self) -> None:
        _require(self, {
            "temporal_frames": (len(self.temporal_frames) > 0
                                and list(self.temporal_frames) == sorted(set(self.temporal_frames)),
                                "frame distances in increasing order, e.g. 1,2,4"),
        })


_GROUP_TYPES = {"objective": ObjectiveOptions, "optimization": OptimizationOptions,
                "plan": PlanOptions, "performance": PerformanceOptions, "video": VideoOptions}
"""`StyleOptions`'s groups, by the attribute that holds each."""


@dataclass(frozen=True, init=False)
class StyleOptions:
    """Hyper-parameters of `jaxstyle.stylize`: a preset and a seed, and the options in five groups.

    Read an option through its group: ``options.objective.style_weight``, ``options.plan.size``,
    ``options.optimization.iterations``. Make options by naming those to change, whichever group
    holds them (every option's name is unique across groups)::

        StyleOptions(preset="fast", size=512, style_weight=10.0)
        StyleOptions(preset="fast", plan=PlanOptions(size=512),
                     objective=ObjectiveOptions(style_weight=10.0))  # the same

    An option named beside its group overrides the group's value; `replace` takes the same
    names. An option a group leaves None is the preset's (`PRESET_VALUES`), filled in here.

    Attributes:
      preset: which `PRESETS` fills in what the groups leave None.
      seed: the run's randomness (noise init, random weights, sliced Wasserstein directions).
      objective: what the picture should be (`ObjectiveOptions`).
      optimization: how it is optimized (`OptimizationOptions`).
      plan: at what sizes (`PlanOptions`).
      performance: how it is computed (`PerformanceOptions`).
      video: what `jaxstyle.video` adds (`VideoOptions`).

    Raises:
      OptionsError: on creation, an invalid value; the message names the option.
      TypeError: on creation, a name that is no option.
    """

    preset: str = _option(
        "balanced",
        "optimizer",
        "'balanced': an objective whose terms are relative to their targets, so that "
        "`style_strength` means the same for any pair, size and network, a line search, and a "
        "stop once the picture stops changing; 'neural-style' reproduces neural-style's runs "
        "(its objective and weights, L-BFGS with unit steps for `iterations`); 'fast' is "
        "neural-style's objective with a line search and a stop once the loss stalls; "
        "'neural-neighbour' replaces each output hypercolumn by its nearest style hypercolumn "
        "and pulls the picture towards those (Neural Neighbor Style Transfer, Kolkin et al. "
        "2022; its knob is `content_alpha`). "
        "Options named below as set by the preset can still be given",
        choices=PRESETS,
    )
    seed: int = _option(
        0,
        "run control",
        "seed for the noise initialisation, random weights and the sliced Wasserstein directions",
    )
    objective: ObjectiveOptions = field(default_factory=ObjectiveOptions)
    optimization: OptimizationOptions = field(default_factory=OptimizationOptions)
    plan: PlanOptions = field(default_factory=PlanOptions)
    performance: PerformanceOptions = field(default_factory=PerformanceOptions)
    video: VideoOptions = field(default_factory=VideoOptions)

    def __init__(self, **options):
        for f in _TOP_FIELDS:
            object.__setattr__(self, f.name, options.pop(f.name, f.default))
        if self.preset not in PRESETS:
            raise OptionsError(f"preset: expected one of {PRESETS}, got {self.preset!r}")
        _check_fields(self, _TOP_FIELDS)
        groups = {}
        for name, kind in _GROUP_TYPES.items():
            group = options.pop(name, None)
            if group is None:
                group = kind()
            elif not isinstance(group, kind):
                raise OptionsError(f"{name}: must be a {kind.__name__} (got {group!r})")
            own = {k: options.pop(k) for k in list(options) if _OWNER.get(k) == name}
            groups[name] = dataclasses.replace(group, **own) if own else group
        if options:
            raise TypeError(f"StyleOptions: no option {next(iter(options))!r}")
        filled = set()
        for name, values in PRESET_VALUES[self.preset].items():
            missing = {k: v for k, v in values.items() if getattr(groups[name], k) is None}
            if missing:
                groups[name] = dataclasses.replace(groups[name], **missing)
                filled |= missing.keys()
        for name, group in groups.items():  # frozen: set once, here, before anything reads them
            object.__setattr__(self, name, group)
        object.__setattr__(self, "_filled_by_preset", frozenset(filled))
        try:
            # Weights and layer names, as the objective checks them. Validation only: deciding
            # 'auto' would start JAX's backend, which must wait for jax.distributed.initialize
            # in a multi-host batch.
            self.loss_weights()
        except ValueError as exc:
            raise OptionsError(str(exc)) from None
        if self.preset == NEURAL_NEIGHBOUR:
            self._check_neighbour()

    def _check_neighbour(self) -> None:
        """Refuses, by name, what the neural-neighbour objective does not compose with yet."""
        objective = self.objective
        defaults = {f.name: f.default for f in dataclasses.fields(objective)}
        refused = {
            "style_loss": (objective.style_loss != defaults["style_loss"],
                           "it matches neighbours, not style statistics"),
            "style_layers": (objective.style_layers != defaults["style_layers"],
                             "it stacks every ReLU of the network's first four blocks"),
            "style_layer_weights": (objective.style_layer_weights is not None,
                                    "it stacks every ReLU of the network's first four blocks"),
            "style_blend_weights": (objective.style_blend_weights is not None,
                                    "several styles' hypercolumns are pooled, not blended"),
            "original_colors": (objective.original_colors == "luminance",
                                "'luminance' does not compose with it yet"),
            "tile_size": (self.plan.tile_size is not None, "tiles do not compose with it yet"),
            "temporal_weight": (self.video.temporal_weight > 0,
                                "the temporal video term does not compose with it yet"),
        }
        for name, (bad, why) in refused.items():
            if bad:
                raise OptionsError(f"{name}: not with preset {NEURAL_NEIGHBOUR}: {why}")

    def loss_config(self, convolution: str | None = None, model_range: float = 1.0
                    ) -> LossConfig:
        """The objective's static configuration (`jaxstyle.losses.LossConfig`) these options make,
        with `convolution` in place of `network_convolution()` when given, for a network whose
        preprocessing spans `model_range` model units per pixel range
        (`jaxstyle.Preprocessing.model_range`; it matters to the relative normalisation only).
        The weights are not part of it but `loss_weights()`.

        Raises:
          ValueError: an invalid layer name (the message names the option).
        """
        # Imported here, not at the top: reading the options (for the CLI's help) must not load
        # JAX.
        from jaxstyle.losses import LossConfig
        from jaxstyle.style_losses import style_loss_named

        return LossConfig(
            content_layers=tuple(self.objective.content_layers),
            style_layers=tuple(self.objective.style_layers),
            pooling=self.objective.pooling,
            style_loss=style_loss_named(self.objective.style_loss, self.seed,
                                        self.objective.histogram_weight),
            content_loss=self.objective.content_loss,
            weight_normalization=self.objective.weight_normalization,
            precision=self.performance.precision,
            convolution=convolution or self.network_convolution(),
            model_range=model_range,
        )

    def loss_weights(self) -> LossWeights:
        """The objective's weights (`jaxstyle.losses.LossWeights`, traced: other values reuse the
        compiled objective): the style weight times the style strength, and the others as given.

        Raises:
          ValueError: an invalid weight, or style layer weights that do not match the style
            layers (the message names the option).
        """
        from jaxstyle.losses import LossWeights

        return LossWeights.create(
            self.loss_config(convolution="direct"),
            content_weight=self.objective.content_weight,
            style_weight=self.objective.style_weight * self.objective.style_strength,
            tv_weight=self.objective.tv_weight,
            style_layer_weights=self.objective.style_layer_weights,
            temporal_weight=self.video.temporal_weight,
        )

    def network_convolution(self, size: int | None = None) -> str:
        """``convolution`` with 'auto' decided: Winograd where it pays for its compilation (a
        CPU, float32, an output of `AUTO_WINOGRAD_SIZE` px or more), else direct; for a scale
        whose longest side is `size` (default: the run's largest)."""
        if self.performance.convolution != "auto":
            return self.performance.convolution
        import jax

        plan = self.plan
        largest = size if size is not None else max(plan.scales) if plan.scales else plan.size
        big = largest == 0 or largest >= AUTO_WINOGRAD_SIZE
        cpu = jax.default_backend() == "cpu"
        return "winograd" if cpu and big and self.performance.precision == "float32" else "direct"

    def optimizer_config(self, model_range: float, pixel_units: bool = False) -> OptimizerConfig:
        """The optimizer's settings, with Adam's rate converted from pixel units to the
        variable's (`model_range`: model-space units per pixel range, from
        `jaxstyle.Preprocessing.model_range`; `pixel_units`: the variable is in pixels)."""
        from jaxstyle.steps import OptimizerConfig

        if self.optimization.optimizer == "adam":
            rate = self.optimization.learning_rate or ADAM_LEARNING_RATE
            rate = rate if pixel_units else rate * model_range
        else:
            rate = self.optimization.learning_rate or LBFGS_STEP
        # A relative objective's values are O(1), so its gradient is far too small to step
        # along unscaled: the first step's length is set in pixels instead.
        scaled_start = (self.objective.weight_normalization == "relative"
                        and self.optimization.lbfgs_linesearch != "none")
        pixel_range = 1.0 if pixel_units else model_range
        return OptimizerConfig(self.optimization.optimizer, rate, self.optimization.lbfgs_history,
                               self.optimization.lbfgs_linesearch, self.optimization.ema_decay,
                               FIRST_STEP * pixel_range if scaled_start else 0.0,
                               grey_level=pixel_range / 255)

    def at_scale(self, size: int) -> StyleOptions:
        """These options for one scale of the run, whose longest side is `size`: 'auto'
        convolution decided there, so the coarse scales of a schedule run direct convolutions,
        which compile in a fraction of Winograd's time and cost no more there."""
        if self.performance.convolution != "auto":
            return self
        return self.replace(convolution=self.network_convolution(size))

    def replace(self, **changes) -> StyleOptions:
        """A copy with `changes`, named as `StyleOptions` takes them (``style_weight=...``,
        ``plan=PlanOptions(...)``, ``preset=...``); a new ``preset`` also replaces what the old
        one filled in."""
        current = {"preset": self.preset, "seed": self.seed,
                   **{name: getattr(self, name) for name in _GROUP_TYPES}}
        kept = frozenset(n for n in self._filled_by_preset
                         if n not in changes and _OWNER[n] not in changes)
        new_preset = changes.get("preset", self.preset) != self.preset
        if new_preset:
            for name in _GROUP_TYPES:
                own = {n: None for n in kept if _OWNER[n] == name}
                current[name] = dataclasses.replace(current[name], **own) if own else current[name]
        result = StyleOptions(**{**current, **changes})
        if not new_preset:  # what the preset filled in and is not changed stays the preset's
            object.__setattr__(result, "_filled_by_preset", result._filled_by_preset | kept)
        return result

    def to_dict(self) -> dict:
        """``preset``, ``seed`` and each group as a dict of its options: what checkpoints and
        reports store (`from_dict` reads it back)."""
        groups = {name: getattr(self, name) for name in _GROUP_TYPES}
        return {"preset": self.preset, "seed": self.seed,
                **{name: {f.name: getattr(group, f.name) for f in dataclasses.fields(group)}
                   for name, group in groups.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> StyleOptions:
        """The options `to_dict` gave (lists, as JSON writes tuples, back to tuples).

        Raises:
          OptionsError: a key missing or unknown (named), or an invalid value.
        """
        groups = {name: [f.name for f in dataclasses.fields(kind)]
                  for name, kind in _GROUP_TYPES.items()}
        for name in [*(f.name for f in _TOP_FIELDS), *groups]:
            if name not in d:
                raise OptionsError(f"no {name!r}")
        unknown = [k for k in d if k not in groups and k not in ("preset", "seed")]
        for name, keys in groups.items():
            if not isinstance(d[name], Mapping):
                raise OptionsError(f"{name}: expected a group of options, got {d[name]!r}")
            if missing := [k for k in keys if k not in d[name]]:
                raise OptionsError(f"no {missing[0]!r} in {name}")
            unknown += [f"{name}.{k}" for k in d[name] if k not in keys]
        if unknown:
            raise OptionsError(f"unknown option {unknown[0]!r}")

        def typed(value):
            return tuple(value) if isinstance(value, list) else value

        return cls(preset=d["preset"], seed=d["seed"], **{
            name: kind(**{k: typed(v) for k, v in d[name].items()})
            for name, kind in _GROUP_TYPES.items()})

    def by_name(self) -> dict:
        """Every option by its name, the groups flattened (``{"preset": ..., "size": ...}``):
        the names the command line, sweeps and the studio use."""
        return {name: getattr(getattr(self, _OWNER[name]) if name in _OWNER else self, name)
                for name in OPTION_FIELDS}


_TOP_FIELDS = tuple(f for f in dataclasses.fields(StyleOptions) if f.name not in _GROUP_TYPES)
_OWNER = {f.name: name for name, kind in _GROUP_TYPES.items() for f in dataclasses.fields(kind)}
"""Which group holds each option (``preset`` and ``seed`` are `StyleOptions`' own)."""
OPTION_FIELDS = {f.name: f for f in (*_TOP_FIELDS, *(f for kind in _GROUP_TYPES.values()
                                                     for f in dataclasses.fields(kind)))}
"""Every option's field by its name: `StyleOptions`' own, then each group's."""
assert len(OPTION_FIELDS) == len(_TOP_FIELDS) + len(_OWNER), "an option name in two groups"


def preset_values(name: str) -> dict:
    """``{preset: value}`` for each preset that fills in option `name` (empty: none does)."""
    group = _OWNER.get(name)
    return {preset: groups[group][name] for preset, groups in PRESET_VALUES.items()
            if name in groups.get(group, {})}


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
