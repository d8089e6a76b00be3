"""The five groups of `jaxstyle.options.StyleOptions`: what the picture should be
(`ObjectiveOptions`), how it is optimized (`OptimizationOptions`), at what sizes
(`PlanOptions`), how it is computed (`PerformanceOptions`) and what video adds
(`VideoOptions`). Each field carries its help text, heading, parser and choices
(`jaxstyle.option_fields.option`)."""

from __future__ import annotations

from dataclasses import dataclass

from jaxstyle.choices import (
    AUTO_WINOGRAD_SIZE,
    CONTENT_LOSSES,
    CONVOLUTION_OPTIONS,
    FLOWS,
    INITS,
    LINESEARCHES,
    OPTIMIZERS,
    ORIGINAL_COLORS,
    PARAMETRIZATIONS,
    POOLINGS,
    PRECISIONS,
    STYLE_LOSSES,
    WEIGHT_NORMALIZATIONS,
)
from jaxstyle.option_fields import (
    OptionGroup,
    OptionsError,
    option,
    parse_floats,
    parse_ints,
    parse_names,
    require,
)
from jaxstyle.presets import CONTENT_ALPHA

LBFGS_STEP = 1.0  # neural-style's unit step
ADAM_LEARNING_RATE = 0.02  # in [0, 1] pixel units


@dataclass(frozen=True)
class ObjectiveOptions(OptionGroup):
    """What the picture should be: the loss terms, their weights and layers, the style
    statistics, and the colours. A weight left None is the preset's (see `StyleOptions`)."""

    style_strength: float | None = option(
        None,
        "content and style",
        "how strongly the style repaints the photo: 0 keeps the photo, larger values paint "
        "more of it away (multiplies the style weight)",
    )
    content_weight: float | None = option(
        None, "content and style", "weight of the content loss (w_c)")
    style_weight: float | None = option(
        None, "content and style", "weight of the style loss (w_s)")
    tv_weight: float | None = option(
        None, "content and style", "weight of the total-variation smoothness loss (w_tv)"
    )
    style_blend_weights: tuple[float, ...] | None = option(
        None,
        "content and style",
        "comma-separated weight per style image, normalised to sum 1 (default: equal)",
        parse=parse_floats,
        metavar="W,W,...",
    )
    style_scale: float = option(
        1.0,
        "content and style",
        "style images are resized to this times the output size before their Gram matrices",
    )
    content_layers: tuple[str, ...] = option(
        ("relu4_2",),
        "content and style",
        "comma-separated layers for the content loss (names as in neural-style: "
        "conv5_4/relu5_4 exist in VGG19, VGG16 stops at conv5_3)",
        parse=parse_names,
        metavar="LAYERS",
    )
    style_layers: tuple[str, ...] = option(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "content and style",
        "comma-separated layers for the style loss",
        parse=parse_names,
        metavar="LAYERS",
    )
    style_layer_weights: tuple[float, ...] | None = option(
        None,
        "content and style",
        "comma-separated multiplier per style layer (default: 1 each)",
        parse=parse_floats,
        metavar="W,W,...",
    )
    pooling: str = option("max", "content and style", "pooling in the network", choices=POOLINGS)
    style_loss: str = option(
        "gram",
        "content and style",
        "style statistics: neural-style's Gram matrices; mean+covariance compared by the "
        "2-Wasserstein distance (crowsonkb's); the whole feature distribution along random "
        "directions (sliced_wasserstein, Heitz et al. 2021); Gram plus per-channel histograms "
        "(gram_histogram, Risser et al. 2017)",
        choices=STYLE_LOSSES,
    )
    redraw_every: int = option(
        10,
        "content and style",
        "with `style_loss` sliced_wasserstein: iterations between redraws of its random "
        "directions, and of `final_pass`'s subsamples (L-BFGS needs the objective fixed in "
        "between)",
    )
    content_alpha: float = option(
        CONTENT_ALPHA,
        "content and style",
        "with `preset` neural-neighbour: the content's share, from 0 to 1, of the hypercolumns "
        "each output position's nearest style hypercolumn is searched for (the rest is the "
        "output's own): 1 keeps the most content, 0 gives the most style (NNST's alpha)",
    )
    style_rotations: bool | None = option(
        None,
        "content and style",
        "with `preset` neural-neighbour: also search the hypercolumns of the style images "
        "rotated by 90, 180 and 270 degrees (NNST's default), as many hypercolumns searched "
        "in all",
    )
    histogram_weight: float = option(
        1.0,
        "content and style",
        "with `style_loss` gram_histogram: the histogram term's weight relative to Gram's",
    )
    content_loss: str = option(
        "mse",
        "content and style",
        "'mse': neural-style's squared feature difference; 'self_similarity': STROTSS's "
        "comparison of feature self-similarities, which keeps layout and frees colours (it needs "
        "other weights: see docs/guide/losses.md)",
        choices=CONTENT_LOSSES,
    )
    weight_normalization: str | None = option(
        None,
        "content and style",
        "'relative': every layer's term is divided by its target's own energy and TV is "
        "measured in pixels, so weights mean the same for any network, pair and size; "
        "'neural-style' keeps its formulas; 'resolution' is neural-style's with the TV term "
        "scaled so that the same weights behave alike at any output size (equal at 512 px)",
        choices=WEIGHT_NORMALIZATIONS,
    )
    style_scales: tuple[float, ...] | None = option(
        None,
        "content and style",
        "comma-separated scale per style image (overrides `style_scale`)",
        parse=parse_floats,
        metavar="S,S,...",
    )
    original_colors: str | None = option(
        None,
        "colour and regions",
        "keep the content's colours: 'luminance' optimizes luminance only (Gatys et al. "
        "2017); 'swap' replaces the result's chroma afterwards (neural-style); 'oklab' "
        "keeps the result's lightness and gives it the content's chroma moved to the style's "
        "palette, in OkLab (Neural Neighbor Style Transfer's closing step)",
        choices=ORIGINAL_COLORS,
    )
    match_style_colors: bool = option(
        False,
        "colour and regions",
        "recolour the style images to the content's colour mean and covariance first",
    )

    def _check(self) -> None:
        require(self, {
            "style_scales": (self.style_scales is None or len(self.style_scales) > 0,
                             "one scale per style image"),
            "style_blend_weights": (self.style_blend_weights is None
                                    or sum(self.style_blend_weights) > 0, "not all 0"),
        })


@dataclass(frozen=True)
class OptimizationOptions(OptionGroup):
    """How the picture is optimized: the optimizer and its step, where it starts, when a scale
    stops, and which iterate is the output. An option left None is the preset's."""

    iterations: int = option(
        1000, "optimizer", "optimizer iterations (neural-style's -num_iterations)"
    )
    init: str = option(
        "content", "optimizer", "initial image: the content image or seeded noise", choices=INITS
    )
    optimizer: str = option(
        "lbfgs", "optimizer", "jaxopt's L-BFGS or optax's Adam", choices=OPTIMIZERS
    )
    learning_rate: float | None = option(
        None,
        "optimizer",
        f"L-BFGS step size (default {LBFGS_STEP:g}, neural-style's unit step) or Adam's "
        f"learning rate in pixel units of [0, 1] (default {ADAM_LEARNING_RATE:g})",
    )
    lbfgs_history: int | None = option(None, "optimizer", "L-BFGS history size")
    lbfgs_linesearch: str | None = option(
        None,
        "optimizer",
        "L-BFGS line search: 'none' takes unit steps like neural-style (which can go far "
        "uphill); 'zoom' (strong Wolfe conditions, searching both ways) costs one evaluation "
        "when L-BFGS's own step is accepted; 'backtracking' can only shorten a step; "
        "'hager-zhang' searches both ways at more evaluations",
        choices=LINESEARCHES,
    )
    stop_tolerance: float | None = option(
        None,
        "optimizer",
        "stop a scale early once the loss fell by less than this fraction per iteration over "
        "the last 10 (0: always run `iterations`, which is then the most a scale runs)",
    )
    stop_change: float | None = option(
        None,
        "optimizer",
        "stop a scale early once the picture changes by less than this many grey levels (of "
        "255) per iteration, on average over pixels and the last 10 iterations (0: never)",
    )
    parametrization: str = option(
        "pixels",
        "optimizer",
        "what the optimizer changes: the image's pixels, or the bands of its Laplacian "
        "pyramid (a step on a coarse band moves a whole region; STROTSS's and Neural Neighbor "
        "Style Transfer's variable)",
        choices=PARAMETRIZATIONS,
    )
    ema_decay: float = option(
        0.0,
        "optimizer",
        "output an exponential moving average of the iterates with this decay (e.g. 0.99; 0: off)",
    )
    keep_best: bool = option(
        False, "optimizer", "output the iterate with the lowest loss, not the last"
    )

    def _check(self) -> None:
        if self.ema_decay and self.keep_best:
            raise OptionsError("ema_decay and keep_best: choose one way to pick the output")


@dataclass(frozen=True)
class PlanOptions(OptionGroup):
    """At what sizes the run works: the output's, the coarse-to-fine scales and their
    iterations, and tiles. An option left None is the preset's."""

    size: int = option(
        512, "output and size", "longest side of the output in pixels (0 keeps the content's size)"
    )
    scales: tuple[int, ...] | None = option(
        None,
        "scales and tiles",
        "coarse-to-fine sizes, e.g. 256,512,1024; each starts from the previous result "
        "upsampled (overrides `size`)",
        parse=parse_ints,
        metavar="SIZE,SIZE,...",
    )
    scale_iterations: tuple[int, ...] | None = option(
        None,
        "scales and tiles",
        "iterations at each of `scales` (one number for all; default: `iterations` each)",
        parse=parse_ints,
        metavar="N,N,...",
    )
    coarsest: int | None = option(
        None,
        "scales and tiles",
        "coarse to fine without `scales`: the run starts at the smallest halving of `size` "
        "that is at least this (at half of `size`, down to 64 px, for smaller outputs) and "
        "doubles up to `size`, each scale starting from the one before with the photo's finer "
        "detail added (0: one scale at `size`)",
        metavar="PIXELS",
    )
    finest_iterations: int | None = option(
        None,
        "scales and tiles",
        "coarse to fine without `scales`: the most iterations at `size` itself; each coarser "
        "scale may run twice as many as the next finer, and every scale at most `iterations` "
        "(0: `iterations` at every scale)",
    )
    final_pass: int | None = option(
        None,
        "scales and tiles",
        "with `preset` neural-neighbour: iterations of a last pass at the output's size that "
        "matches each layer's features on their own rather than as hypercolumns, on random "
        "subsamples of positions redrawn every `redraw_every` iterations (NNST-Opt's last "
        "pass; with several style images or style masks it matches hypercolumns, as the "
        "scales before it); 0: none",
    )
    tile_size: int | None = option(
        None,
        "scales and tiles",
        "render outputs larger than this many pixels a side in overlapping tiles of this "
        "size (for outputs that do not fit in memory)",
        metavar="PIXELS",
    )
    tile_overlap: int = option(
        64, "scales and tiles", "overlap between tiles in pixels, feathered to hide seams"
    )

    def _check(self) -> None:
        scales, counts = self.scales or (), self.scale_iterations
        require(self, {
            "tile_overlap": (self.tile_size is None or 2 * self.tile_overlap < self.tile_size,
                             "under half of `tile_size`"),
            "scales": (self.scales is None or len(scales) > 0, "sizes, e.g. 256,512"),
            "scale_iterations": (counts is None or len(counts) in (1, len(scales)),
                                 f"one count, or one per scale ({len(scales)})" if scales
                                 else "one count when `scales` is not given"),
        })


@dataclass(frozen=True)
class PerformanceOptions(OptionGroup):
    """How the run computes what it optimizes: numeric precision, the convolution algorithm,
    the memory check, and the chunk between progress reports (which never changes a result)."""

    progress_every: int = option(
        10, "run control", "iterations between progress reports (one compiled chunk); it never "
        "changes a result"
    )
    memory_limit_gb: float | None = option(
        None,
        "performance",
        "refuse runs whose estimated peak memory exceeds this (default: the memory free "
        "on the device; 0: never refuse)",
    )
    precision: str = option(
        "float32",
        "performance",
        "'bfloat16' runs the convolutions in bfloat16 (Gram matrices and losses stay "
        "float32); a large gain on GPUs and TPUs, none on CPUs (XLA:CPU convolves in float32) "
        "unless with `convolution` winograd on a CPU with bfloat16 instructions",
        choices=PRECISIONS,
    )
    convolution: str | None = option(
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
class VideoOptions(OptionGroup):
    """What `jaxstyle.video` adds for a sequence of frames (Ruder et al. 2016)."""

    temporal_weight: float | None = option(
        None,
        "video",
        "weight of the temporal loss that keeps each frame close to the previous stylized frame "
        "warped along the optical flow (Ruder et al. 2016); 0: independent frames",
    )
    flow: str = option(
        "dis",
        "video",
        "optical flow (OpenCV): DIS (fast), Farneback, or DeepFlow (the paper's; needs "
        "opencv-contrib-python-headless)",
        choices=FLOWS,
    )
    temporal_frames: tuple[int, ...] = option(
        (1,),
        "video",
        "earlier frames each frame is held to: 1 (the previous frame, short-term), or e.g. "
        "1,2,4 for long-term consistency (Ruder et al. 2016)",
        parse=parse_ints,
        metavar="N,N,...",
    )
    first_frame_iterations: int | None = option(
        None,
        "video",
        "iterations for the first frame, which starts from scratch (default: twice "
        "`iterations`); later frames start from the previous one warped",
    )
    passes: int = option(
        1,
        "video",
        "1: frame after frame, each from the previous stylized one; N >= 2: N passes over all "
        "frames in alternating directions, each frame held to its neighbour from the pass "
        "before, so a pass's frames run as batches sharded over all devices",
    )
    pass_batch: int = option(8, "video", "with `passes` N >= 2: frames per batch")

    def _check(self) -> None:
        require(self, {
            "temporal_frames": (len(self.temporal_frames) > 0
                                and list(self.temporal_frames) == sorted(set(self.temporal_frames)),
                                "frame distances in increasing order, e.g. 1,2,4"),
        })


GROUP_TYPES = {"objective": ObjectiveOptions, "optimization": OptimizationOptions,
                "plan": PlanOptions, "performance": PerformanceOptions, "video": VideoOptions}
"""`StyleOptions`'s groups, by the attribute that holds each."""
