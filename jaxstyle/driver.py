"""`stylize` and `stylize_batch`: from RGB arrays to stylized RGB arrays, one driver for both.

A run is a plan (`jaxstyle.stages`): stages of scale x tile. The driver walks it: for each stage
it builds the problem (targets, masks, start image from the canvas), calls
`jaxstyle.optimize.minimize` and pastes the result into the canvas. Every control composes with
every other because none of them is a branch of the driver: scales only change the stage's size,
tiles its window, masks and colour modes the problem, and a resumed run starts at the stage its
checkpoint recorded. The driver walks a list of images, each with its own inputs
(`jaxstyle.checks.ImageInputs`): `stylize`'s is a list of one, laid out as it is; a batch's
images walk in lockstep, laid out with a leading axis that the single-image step is
`jax.vmap`-ped over (`jaxstyle.layouts`), so every control of one image is every image's.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import numpy as np

from jaxstyle.ahead import Ahead, prepare_later_scales, prepare_scales, prepares_ahead
from jaxstyle.checks import (
    ImageInputs,
    check_arguments,
    check_batch_inputs,
    check_image,
    check_image_inputs,
    check_inputs,
)
from jaxstyle.compiled import COMPILED
from jaxstyle.errors import JaxstyleError, RunDivergedError, count
from jaxstyle.layouts import ONE_IMAGE, Layout, Sharded
from jaxstyle.optimize import Progress
from jaxstyle.options import StyleOptions
from jaxstyle.plan_memory import check_plan_memory
from jaxstyle.problem import (
    Problem,
    Scale,
    carried_canvas,
    finish,
    network_params,
    stage_problem,
    start_canvas,
)
from jaxstyle.run_state import RunState
from jaxstyle.stage_run import Walk, compile_stage, run_stage
from jaxstyle.stages import Stage, total_iterations
from jaxstyle.tiling import paste
from jaxstyle.vgg import VGGWeights


@dataclass
class StylizeProgress:
    """Passed to `stylize`'s callback after each chunk of iterations.

    A batch's (`stylize_batch`) is the same report with a leading axis of images (as laid out:
    padded to its devices, `jaxstyle.layouts`) on everything that is an image's own.

    Attributes:
      iteration: iterations of the whole run done (through all stages).
      total_iterations: iterations of the whole run.
      stage: the stage running (`jaxstyle.stages.Stage`: its scale, tile, window, ...).
      value: this stage's total loss now (summed over a batch).
      components: its loss components (``content``, ``style``, ``tv``, ``style/<layer>``),
        summed over a batch.
      evaluations: loss-and-gradient evaluations of this stage so far (a batch: the most of
        any image).
      elapsed: seconds since this stage's optimization started (compilation included).
      x: the stage's variable (model-space image [h, w, 3], or luminance [h, w, 1]).
      state: the optimizer state that goes with `x`.
      history: the loss after each iteration of the whole run so far, by component (a batch:
        each entry one loss per image).
      canvas: float32 [H, W, 3] RGB, the scale's picture as it was when the stage started.
      picture: returns the whole current picture (the stage's `x` pasted into `canvas`).
      stages: the run's whole plan (`work`).
    """

    iteration: int
    total_iterations: int
    stage: Stage
    value: float
    components: dict[str, float]
    evaluations: int
    elapsed: float
    x: jax.Array
    state: object
    history: dict[str, list[float]]
    canvas: np.ndarray
    picture: Callable[[], np.ndarray]
    stages: tuple[Stage, ...] = ()

    @property
    def scale(self) -> int:
        return self.stage.scale

    @property
    def tile(self) -> int:
        return self.stage.tile

    @property
    def tiles(self) -> int:
        return self.stage.tiles

    def run_state(self) -> RunState:
        """Everything needed to continue the run from here (see `stylize`'s and
        `stylize_batch`'s `resume`)."""
        return RunState(self.iteration, np.asarray(self.x),
                        jax.tree_util.tree_map(np.asarray, self.state),
                        {k: list(v) for k, v in self.history.items()},
                        stage=self.stage.index, canvas=np.asarray(self.canvas))

    def image(self) -> np.ndarray:
        """The current picture as float32 [H, W, 3] RGB in [0, 1] (a batch: [B, H, W, 3])."""
        return self.picture()

    def work(self) -> tuple[int, int]:
        """``(done, total)`` of the run's work in pixel-iterations: each stage's iterations
        times its window's pixels, so that an iteration counts for what it costs (at 512 px
        one is sixteen of 128 px's) and a pace measured at one scale predicts the others."""
        done = total = 0
        for s in self.stages:
            pixels = s.window[2] * s.window[3]
            total += s.iterations * pixels
            if s.index < self.stage.index:
                done += s.iterations * pixels
            elif s.index == self.stage.index:
                done += (self.iteration - s.offset) * pixels
        return done, total


@dataclass
class StylizeResult:
    """What `stylize` returns.

    Attributes:
      image: float32 [H, W, 3] RGB in [0, 1].
      history: the loss after each iteration, by component (``total``, ``content``, ...),
        through all stages in order.
      losses: the final loss components (the mean over the last scale's tiles when tiled).
      evaluations: loss-and-gradient evaluations made by the optimizer.
      timings: seconds spent on ``targets``, ``compile``, ``optimize`` and ``total``.
      weights_source: where the network's weights came from.
      devices: how many devices the run was sharded over (1 for `stylize`).
      scales: per scale run (coarse to fine): ``(size, iterations, seconds)``, its output's
        (H, W), the iterations it ran (fewer than planned when a stop rule ended it; a resumed
        scale's count is from its resume point) and its seconds, tiles together.
    """

    image: np.ndarray
    history: dict[str, list[float]]
    losses: dict[str, float]
    evaluations: int
    timings: dict[str, float]
    weights_source: str
    devices: int = 1
    scales: tuple[tuple[tuple[int, int], int, float], ...] = ()


def _progress(p: Progress, stage: Stage, stages: tuple[Stage, ...], history: dict,
              canvas: np.ndarray, problems: list[Problem], layout: Layout,
              overlap: int) -> StylizeProgress:
    """`minimize`'s progress as the whole run's (`history`: the run's before this stage)."""
    def picture() -> np.ndarray:
        return layout.join([paste(c, problem.to_rgb(x), stage.window, overlap) for c, problem, x
                            in zip(layout.split(canvas), problems, layout.split(p.x))])

    whole = {k: history.get(k, []) + v for k, v in p.history.items()}
    return StylizeProgress(stage.offset + p.iteration, total_iterations(stages), stage, p.value,
                           p.components, p.evaluations, p.elapsed, p.x, p.state, whole, canvas,
                           picture, stages)


def _start_canvases(layout: Layout, stage: Stage, resume: RunState | None,
                    canvases: list[np.ndarray], scales: list[Scale], options: StyleOptions,
                    key: jax.Array, images: list[ImageInputs]) -> list[np.ndarray]:
    """The pictures a stage starts from, one per image, float32 [H, W, 3] RGB at the stage's
    scale: the checkpoint's canvas in the stage a run resumes in; within a scale, the canvas so
    far (earlier tiles pasted); at a later scale's first tile, the previous scale's result
    upsampled with the photo's finer detail (`carried_canvas`); at the very start, each
    image's ``init_image``, noise or the content (``options.optimization.init``)."""
    if resume is not None and resume.canvas is not None:
        saved = layout.split(np.asarray(resume.canvas, np.float32))
        if len(saved) != len(scales) or any(np.shape(c) != (*stage.size, 3) for c in saved):
            raise JaxstyleError(f"resume: the saved canvas has shape {np.shape(resume.canvas)}; "
                                f"this run lays out {count(len(scales), 'image')} of "
                                f"{stage.size[1]}x{stage.size[0]}")
        return saved
    if resume is not None and stage.index > 0:
        raise JaxstyleError(f"resume: the checkpoint has no canvas for stage {stage.index + 1} "
                            "(it was written by an older version)")
    if stage.tile > 0:
        return canvases
    if stage.scale > 0:
        return [carried_canvas(c, s.content_rgb) for c, s in zip(canvases, scales)]
    return [start_canvas(s.content_rgb, options, key, image.init_image)
            for s, image in zip(scales, images)]


def _walk_plan(walk: Walk, images: list[ImageInputs], styles: list[jax.Array],
               stages: tuple[Stage, ...], resume: RunState | None,
               compiled: float = 0.0) -> list[StylizeResult]:
    """The driver: walks `stages` for `images` (one, or a batch in lockstep), laid out as
    ``walk.layout`` says; `compiled`: seconds spent compiling before the walk (the memory
    check)."""
    options = walk.options
    share_style = not (options.objective.match_style_colors
                       or options.objective.original_colors == "luminance")
    begin = 0 if resume is None else resume.stage
    if not 0 <= begin < len(stages) or resume is not None and not (
            0 <= resume.iteration - stages[begin].offset <= stages[begin].iterations):
        raise JaxstyleError(f"resume: stage {begin} at iteration {resume.iteration} is not part "
                            f"of this run's plan of {len(stages)} stages")
    laid = walk.layout.padded(images)
    # The whole run's loss history (a batch's entries: one value per image); a resumed run's
    # comes from its checkpoint.
    history = {} if resume is None else {k: list(v) for k, v in resume.history.items()}
    totals = {"targets": 0.0, "compile": compiled, "optimize": 0.0, "total": compiled}
    ahead = prepare_later_scales(walk, stages[begin:], laid, styles, share_style)
    try:
        return _walk_stages(walk, laid, styles, stages, resume, begin, share_style, history,
                            totals, ahead)[:len(images)]
    finally:
        if ahead is not None:
            ahead.cancel()


def _walk_stages(walk: Walk, images: list[ImageInputs], styles: list[jax.Array],
                 stages: tuple[Stage, ...], resume: RunState | None, begin: int,
                 share_style: bool, history: dict, totals: dict,
                 ahead: Ahead | None) -> list[StylizeResult]:
    """`_walk_plan`'s loop over the stages from `begin`, with `ahead` (or None) preparing the
    later scales."""
    options, weights, layout = walk.options, walk.weights, walk.layout
    canvases: list[np.ndarray] = []
    scales: list[Scale] = []
    per_stage: list[list[dict]] = []  # the current scale's final losses, stage by stage
    evaluations = [0] * len(images)
    ran: dict[tuple[int, int], list] = {}  # each scale's size: [iterations, seconds]
    for stage in stages[begin:]:
        started = time.perf_counter()
        resuming = resume if stage.index == begin else None
        here = walk._replace(options=options.at_scale(max(stage.size)))
        params = None
        if stage.tile == 0 or resuming is not None:
            scales, params = _stage_scales(here, stage, ahead, images, styles, share_style)
            per_stage = [] if stage.tile == 0 else per_stage
        canvases = _start_canvases(layout, stage, resuming, canvases, scales, options, walk.key,
                                   images)
        problems = [stage_problem(s, c, stage, weights, here.options)
                    for s, c in zip(scales, canvases)]
        jax.block_until_ready([p.targets for p in problems])
        totals["targets"] += time.perf_counter() - started
        if ahead is not None:  # this scale compiled first, then the later ones behind it
            params = _compile_first(here, problems, share_style, params, totals)
            here = ahead.start_after_first_report(here)
        as_run = functools.partial(
            _progress, stage=stage, stages=stages, history=history,
            canvas=layout.join(canvases), problems=problems, layout=layout,
            overlap=here.options.plan.tile_overlap)
        pictures, finals, result = run_stage(here, problems, stage, resuming, share_style,
                                             params, as_run)
        if ahead is not None:  # a stage that reported nothing: the next one waits for `ahead`
            ahead.start()
        canvases = [picture if stage.tiles == 1 else paste(c, picture, stage.window,
                                                           options.plan.tile_overlap)
                    for c, picture in zip(canvases, pictures)]
        per_stage.append(finals)
        _record(layout, result, history, evaluations, totals, started)
        scale = ran.setdefault(stage.size, [0, 0.0])
        scale[0] += len(result.history.get("total", ()))
        scale[1] += time.perf_counter() - started
    histories = layout.split_history(history, len(images))
    return [_result(walk, canvases[i], scales[i], histories[i], [f[i] for f in per_stage],
                    evaluations[i], totals, ran) for i in range(len(images))]


def _stage_scales(here: Walk, stage: Stage, ahead: Ahead | None, images: list[ImageInputs],
                  styles: list[jax.Array], share_style: bool) -> tuple[list[Scale], dict | None]:
    """``(scales, params)`` of the scale `stage` starts: taken from `ahead` when it prepared
    them, else prepared here (params None: not yet made)."""
    prepared = ahead and stage.tile == 0 and ahead.take(stage.scale)
    if prepared:
        return prepared
    return prepare_scales(here, stage, images, styles, share_style), None


def _compile_first(here: Walk, problems: list[Problem], share_style: bool, params: dict | None,
                   totals: dict) -> dict:
    """Compiles the stage's problems before the later scales are prepared behind them (the
    time counted in ``totals["compile"]``); returns its network parameters."""
    compiling = time.perf_counter()
    if params is None:
        params = network_params(here.weights.params, here.options, problems[0].image_shape)
    compile_stage(here, problems, share_style, params)
    totals["compile"] += COMPILED.seconds_since(compiling)
    return params


def _record(layout: Layout, result, history: dict, evaluations: list[int], totals: dict,
            started: float) -> None:
    """Adds a stage's `minimize` result to the run's history and each image's evaluation
    count, and its seconds to the run's timings."""
    for key, values in result.history.items():
        history.setdefault(key, []).extend(values)
    for i, done in enumerate(layout.split(result.state.opt.num_fun_eval)):
        evaluations[i] += int(done)
    totals["compile"] += result.compile_seconds
    totals["optimize"] += result.run_seconds
    totals["total"] += time.perf_counter() - started


def _result(walk: Walk, canvas: np.ndarray, scale: Scale, history: dict, finals: list[dict],
            evaluations: int, totals: dict, ran: dict) -> StylizeResult:
    """One image's `StylizeResult` from its last canvas and its final losses stage by stage
    (the mean over the last scale's tiles)."""
    return StylizeResult(
        image=finish(canvas, scale, walk.options),
        history=history,
        losses={k: float(np.mean([f[k] for f in finals])) for k in finals[-1]},
        evaluations=evaluations,
        timings=dict(totals),
        weights_source=walk.weights.source,
        devices=walk.layout.device_count,
        scales=tuple((size, n, seconds) for size, (n, seconds) in ran.items()),
    )


def stylize(content: jax.Array, styles: Sequence[jax.Array], weights: VGGWeights,
            options: StyleOptions | None = None, *, key: jax.Array | None = None,
            init_image: jax.Array | None = None,
            style_masks: Sequence[jax.Array | None] | None = None,
            content_mask: jax.Array | None = None,
            callback: Callable[[StylizeProgress], None] | None = None,
            report_at: Callable[[int], bool] | None = None, resume: RunState | None = None,
            previous: Sequence[tuple[jax.Array, jax.Array]] | None = None,
            style_cache: dict | None = None) -> StylizeResult:
    """Repaints `content` in the style of `styles` (Gatys et al. 2015, neural-style's objective).

    Has no side effects: it reads its arguments and returns; files are the caller's business.
    Scales, tiles, masks, colour modes and resuming all combine (`jaxstyle.stages`).

    Args:
      content: float [H, W, 3] RGB in [0, 1]; resized so its longest side is ``options.plan.size``.
      styles: one or more float [H_i, W_i, 3] RGB in [0, 1], resized to
        ``options.objective.style_scale`` (or their own ``options.objective.style_scales``) times
        the output's longest side.
      weights: VGG weights from `jaxstyle.load_weights` or `jaxstyle.random_weights`.
      options: hyper-parameters; `StyleOptions()` by default.
      key: where randomness enters (the noise start, sliced Wasserstein's redraws, the
        neural-neighbour style samples); default ``jax.random.key(options.seed)``, the CLI's.
      init_image: start from this image instead of ``options.optimization.init``.
      style_masks: one mask image per style (float [H, W] or [H, W, 3], any size; white = this
        style applies there; None: everywhere), to paint different styles in different regions.
      content_mask: a mask image; the content loss counts only where it is white.
      callback: called with a `StylizeProgress` every ``options.performance.progress_every``
        iterations and at the end of every stage.
      report_at: iterations of the whole run at which a chunk must also end and `callback` be
        called.
      resume: continue a run from this state (from `StylizeProgress.run_state` or a
        checkpoint), at any stage of any plan; the inputs and options must be the run's own. The
        result is bit for bit that of the uninterrupted run on the same machine.
      previous: for video (`jaxstyle.video`): ``(warped, weights)`` pairs, earlier stylized
        frames warped to this one (float [H, W, 3] RGB in [0, 1], resized to the output) and
        their per-pixel consistency weights float [H, W] in [0, 1]; adds the temporal loss
        weighted by ``options.video.temporal_weight``.
      style_cache: a dict kept between calls with the same styles and options (the frames of a
        video): the style targets are computed once and reused from it.

    Returns:
      A `StylizeResult` with the image, the loss history through all stages, evaluations and
      timings.

    Raises:
      JaxstyleError: invalid inputs or a `resume` state that does not fit;
        `RunDivergedError` if the loss becomes NaN or infinite (it carries the last good state).
    """
    options = check_arguments(weights, options)
    styles = _checked_styles(styles)
    image = check_image_inputs(len(styles), content, init_image, style_masks, content_mask,
                               previous)
    stages = check_inputs(image.content.shape, [s.shape for s in styles], options)
    walk = Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                callback, report_at, ONE_IMAGE, style_cache)
    started = time.perf_counter()  # the memory check compiles the run: count it as compiling
    _check_memory(walk, stages, image, styles, resume)
    return _walk_plan(walk, [image], styles, stages, resume, COMPILED.seconds_since(started))[0]


def _checked_styles(styles: Sequence) -> list[jax.Array]:
    return [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]


def _check_memory(walk: Walk, stages: tuple[Stage, ...], image: ImageInputs,
                  styles: list[jax.Array], resume: RunState | None) -> None:
    """`check_plan_memory` for one image of the run, from the stage it starts at."""
    first = 0 if resume is None else resume.stage
    # One image's program is `stylize`'s: compiled here for the run, unless its scales are
    # prepared ahead (the largest is then compiled while the smaller ones run, and checked
    # then by `minimize`, before it allocates anything). A batch's own program is checked by
    # `minimize` the same way; here only what needs no compilation.
    check_plan_memory(stages, image.content.shape, [s.shape for s in styles], walk.weights,
                      walk.options, image.style_masks is not None,
                      image.content_mask is not None, len(image.previous or ()),
                      compile=not walk.layout.vmapped and not prepares_ahead(stages[first:]))


def stylize_batch(contents: Sequence[jax.Array], styles: Sequence[jax.Array],
                  weights: VGGWeights, options: StyleOptions | None = None, *,
                  key: jax.Array | None = None, devices: Sequence[jax.Device] | None = None,
                  init_images: Sequence[jax.Array | None] | None = None,
                  style_masks: Sequence[Sequence[jax.Array | None] | None] | None = None,
                  content_masks: Sequence[jax.Array | None] | None = None,
                  callback: Callable[[StylizeProgress], None] | None = None,
                  report_at: Callable[[int], bool] | None = None, resume: RunState | None = None,
                  previous: Sequence[Sequence[tuple[jax.Array, jax.Array]] | None] | None = None,
                  style_cache: dict | None = None) -> list[StylizeResult]:
    """Stylizes several content images with the same styles and options, batched and sharded.

    A batch is `stylize`'s run with a leading axis: images whose plans (the output size at
    every scale) and controls (which masks, how many earlier frames) match run together, the
    single-image optimizer step `jax.vmap`-ped, so that every image keeps its own optimizer
    state and ends where a run of its own would, and the batch axis sharded across `devices`.
    Each batch walks the plan's stages (scales, tiles) in lockstep; a stop rule
    (``options.optimization.stop_tolerance``, ``stop_change``) ends a batch's scale once every
    image in it has met it. Every per-image argument holds one entry per content image.

    Args:
      contents: float [H_i, W_i, 3] RGB images in [0, 1].
      styles: the style images, as for `stylize`.
      weights: the network.
      options: as for `stylize`.
      key: as for `stylize`.
      devices: devices to shard each batch over (default: all local devices). A batch is padded
        with copies of its last image to a multiple of their number.
      init_images: per image, `stylize`'s ``init_image`` (None: ``options.optimization.init``).
      style_masks: per image, `stylize`'s ``style_masks`` (None: no regions).
      content_masks: per image, `stylize`'s ``content_mask`` (None: none).
      callback: called with a `StylizeProgress` of the batch after each chunk: its ``value``
        summed over the images, its ``x``, ``state``, ``canvas`` and ``image()`` with a leading
        axis of images (as laid out: padded), each ``history`` entry one value per image.
      report_at: as for `stylize`.
      resume: continue a batch from its state (``run_state()`` of its `StylizeProgress`): the
        images must be the batch's own, which run as one batch, on as many devices.
      previous: per image, `stylize`'s ``previous`` (video's multi-pass mode; None: none).
      style_cache: as for `stylize`.

    Returns:
      One `StylizeResult` per content image, in order; each equals what `stylize` gives for that
      image alone (up to floating-point reassociation in batched kernels, and a stop rule).

    Raises:
      JaxstyleError: invalid inputs or options, a per-image argument without one entry per
        content image, or a `resume` state that does not fit; `RunDivergedError` if a loss
        becomes NaN or infinite.
    """
    options = check_arguments(weights, options)
    styles = _checked_styles(styles)
    images = check_batch_inputs(contents, len(styles), init_images, style_masks, content_masks,
                                previous)
    walk = Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                callback, report_at, Sharded(tuple(devices or jax.local_devices())), style_cache)
    return _walk_groups(walk, images, styles, resume)


def _walk_groups(walk: Walk, images: list[ImageInputs], styles: list[jax.Array],
                 resume: RunState | None) -> list[StylizeResult]:
    """Walks the images whose plans and controls match together, a batch each; the results
    in the images' order."""
    groups: dict[tuple, list[int]] = {}
    plans = {}
    for index, image in enumerate(images):
        stages = check_inputs(image.content.shape, [s.shape for s in styles], walk.options)
        signature = (tuple(stage.size for stage in stages), image.controls())
        groups.setdefault(signature, []).append(index)
        plans[signature] = stages
    if resume is not None and len(groups) > 1:
        raise JaxstyleError(f"resume: these images run as {len(groups)} batches (by size and "
                            "masks); a batch's state continues one: give only its images")
    results: list[StylizeResult | None] = [None] * len(images)
    for signature, indices in groups.items():
        group = [images[i] for i in indices]
        started = time.perf_counter()
        _check_memory(walk, plans[signature], group[0], styles, resume)
        try:
            done = _walk_plan(walk, group, styles, plans[signature], resume,
                              COMPILED.seconds_since(started))
        except RunDivergedError as exc:
            height, width = signature[0][-1]
            raise RunDivergedError(f"batch of {count(len(indices), 'image')} at "
                                   f"{width}x{height}: {exc}", exc.last_good, exc.run) from None
        for index, result in zip(indices, done):
            results[index] = result
    return results
