"""`stylize` and `stylize_batch`: from RGB arrays to stylized RGB arrays, one driver for both.

A run is a plan (`jaxstyle.stages`): stages of scale x tile. The driver walks it: for each stage
it builds the problem (targets, masks, start image from the canvas), calls
`jaxstyle.optimize.minimize` and pastes the result into the canvas. Every control composes with
every other because none of them is a branch of the driver: scales only change the stage's size,
tiles its window, masks and colour modes the problem, a batch the number of canvases walked in
lockstep, and a resumed run starts at the stage its checkpoint recorded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import numpy as np

from jaxstyle.ahead import Ahead, prepare_later_scales, prepare_scales, prepares_ahead
from jaxstyle.checks import check_arguments, check_image, check_inputs, check_masks
from jaxstyle.choices import NEURAL_NEIGHBOUR
from jaxstyle.compiled import COMPILED
from jaxstyle.errors import JaxstyleError, OptimizationError
from jaxstyle.optimize import Progress
from jaxstyle.option_fields import OptionsError
from jaxstyle.options import StyleOptions
from jaxstyle.problem import (
    Problem,
    Scale,
    carried_canvas,
    check_plan_memory,
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

    Attributes:
      iteration: iterations of the whole run done (through all stages).
      total_iterations: iterations of the whole run.
      stage: the stage running (`jaxstyle.stages.Stage`: its scale, tile, window, ...).
      value: this stage's total loss now.
      components: its loss components (``content``, ``style``, ``tv``, ``style/<layer>``).
      evaluations: loss-and-gradient evaluations of this stage so far.
      elapsed: seconds since this stage's optimization started (compilation included).
      x: the stage's variable (model-space image [h, w, 3], or luminance [h, w, 1]).
      state: the optimizer state that goes with `x`.
      history: the loss after each iteration of the whole run so far, by component.
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
        """Everything needed to continue the run from here (see `stylize`'s `resume`)."""
        return RunState(self.iteration, np.asarray(self.x),
                        jax.tree_util.tree_map(np.asarray, self.state),
                        {k: list(v) for k, v in self.history.items()},
                        stage=self.stage.index, canvas=np.asarray(self.canvas))

    def image(self) -> np.ndarray:
        """The current picture as float32 [H, W, 3] RGB in [0, 1]."""
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
      devices: how many devices the run was sharded over.
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


def _progress(p: Progress, stage: Stage, stages: tuple[Stage, ...], history: dict | None,
              canvas: np.ndarray, problem: Problem, overlap: int) -> StylizeProgress:
    """`minimize`'s progress as the whole run's (history None: a batch, whose per-image
    histories are not reported)."""
    def picture() -> np.ndarray:
        x = p.x if history is not None else p.x[0]
        return paste(canvas, problem.to_rgb(x), stage.window, overlap)

    whole = {} if history is None else {k: history.get(k, []) + v for k, v in p.history.items()}
    return StylizeProgress(stage.offset + p.iteration, total_iterations(stages), stage, p.value,
                           p.components, p.evaluations, p.elapsed, p.x, p.state, whole, canvas,
                           picture, stages)


def _start_canvases(stage: Stage, resume: RunState | None, canvases: list[np.ndarray],
                    scales: list[Scale], options: StyleOptions, key: jax.Array,
                    init_images: list) -> list[np.ndarray]:
    """The pictures a stage starts from, one per image, float32 [H, W, 3] RGB at the stage's
    scale: the checkpoint's canvas in the stage a run resumes in; within a scale, the canvas so
    far (earlier tiles pasted); at a later scale's first tile, the previous scale's result
    upsampled with the photo's finer detail (`carried_canvas`); at the very start,
    `init_images`, noise or the content (``options.optimization.init``)."""
    if resume is not None and resume.canvas is not None:
        return [np.asarray(resume.canvas, np.float32)]
    if resume is not None and stage.index > 0:
        raise JaxstyleError(f"resume: the checkpoint has no canvas for stage {stage.index + 1} "
                            "(it was written by an older version)")
    if stage.tile > 0:
        return canvases
    if stage.scale > 0:
        return [carried_canvas(c, s.content_rgb) for c, s in zip(canvases, scales)]
    return [start_canvas(s.content_rgb, options, key, init)
            for s, init in zip(scales, init_images)]


def _walk_plan(walk: Walk, contents: list[jax.Array], styles: list[jax.Array],
               stages: tuple[Stage, ...], init_images: list, style_masks, content_mask,
               resume: RunState | None, previous: list | None = None,
               compiled: float = 0.0) -> list[StylizeResult]:
    """The driver: walks `stages` for the content images (one, or a batch in lockstep);
    `previous` holds each image's temporal targets (video), or is None; `compiled`: seconds
    spent compiling before the walk (the memory check)."""
    options = walk.options
    share_style = not (options.objective.match_style_colors
                       or options.objective.original_colors == "luminance")
    begin = 0 if resume is None else resume.stage
    if not 0 <= begin < len(stages) or resume is not None and not (
            0 <= resume.iteration - stages[begin].offset <= stages[begin].iterations):
        raise JaxstyleError(f"resume: stage {begin} at iteration {resume.iteration} is not part "
                            f"of this run's plan of {len(stages)} stages")
    # The whole run's loss history per image; a resumed run's comes from its checkpoint.
    histories = ([{} for _ in contents] if resume is None
                 else [{k: list(v) for k, v in resume.history.items()}])
    totals = {"targets": 0.0, "compile": compiled, "optimize": 0.0, "total": compiled}
    ahead = prepare_later_scales(walk, stages[begin:], contents, styles, style_masks,
                                 content_mask, previous, share_style)
    try:
        return _walk_stages(walk, contents, styles, stages, init_images, style_masks,
                            content_mask, resume, previous, begin, share_style, histories,
                            totals, ahead)
    finally:
        if ahead is not None:
            ahead.cancel()


def _walk_stages(walk, contents, styles, stages, init_images, style_masks, content_mask, resume,
                 previous, begin, share_style, histories, totals, ahead) -> list[StylizeResult]:
    """`_walk_plan`'s loop over the stages from `begin`, with `ahead` (or None) preparing the
    later scales."""
    options, weights = walk.options, walk.weights
    canvases: list[np.ndarray] = []
    scales: list[Scale] = []
    per_stage: list[list[dict]] = []  # the current scale's final losses, stage by stage
    evaluations = [0] * len(contents)
    ran: dict[tuple[int, int], list] = {}  # each scale's size: [iterations, seconds]
    for stage in stages[begin:]:
        started = time.perf_counter()
        resuming = resume if stage.index == begin else None
        here = walk._replace(options=options.at_scale(max(stage.size)))
        params = None
        if stage.tile == 0 or resuming is not None:
            scales, params = _stage_scales(here, stage, ahead, contents, styles, style_masks,
                                           content_mask, previous, share_style)
            per_stage = [] if stage.tile == 0 else per_stage
        canvases = _start_canvases(stage, resuming, canvases, scales, options, walk.key,
                                   init_images)
        problems = [stage_problem(s, c, stage, weights, here.options)
                    for s, c in zip(scales, canvases)]
        jax.block_until_ready([p.targets for p in problems])
        totals["targets"] += time.perf_counter() - started
        if ahead is not None:  # this scale compiled first, then the later ones behind it
            params = _compile_first(here, problems[0], params, totals)
            ahead.start()
        as_run = functools.partial(
            _progress, stage=stage, stages=stages, canvas=canvases[0], problem=problems[0],
            history=histories[0] if walk.devices is None else None,
            overlap=here.options.plan.tile_overlap)
        images, finals, result = run_stage(here, problems, stage, resuming, share_style, params,
                                           as_run)
        canvases = [image if stage.tiles == 1 else paste(c, image, stage.window,
                                                         options.plan.tile_overlap)
                    for c, image in zip(canvases, images)]
        per_stage.append(finals)
        _record(walk, result, histories, evaluations, totals, started)
        scale = ran.setdefault(stage.size, [0, 0.0])
        scale[0] += len(result.history.get("total", ()))
        scale[1] += time.perf_counter() - started
    return [_result(walk, canvases[i], scales[i], histories[i], [f[i] for f in per_stage],
                    evaluations[i], totals, ran) for i in range(len(contents))]


def _stage_scales(here: Walk, stage: Stage, ahead: Ahead | None, contents, styles, style_masks,
                  content_mask, previous, share_style: bool) -> tuple[list[Scale], dict | None]:
    """``(scales, params)`` of the scale `stage` starts: taken from `ahead` when it prepared
    them, else prepared here (params None: not yet made)."""
    prepared = ahead and stage.tile == 0 and ahead.take(stage.size)
    if prepared:
        return prepared
    return prepare_scales(here, stage, contents, styles, style_masks, content_mask, previous,
                          share_style), None


def _compile_first(here: Walk, problem: Problem, params: dict | None, totals: dict) -> dict:
    """Compiles the stage's problem before the later scales are prepared behind it (the time
    counted in ``totals["compile"]``); returns its network parameters."""
    compiling = time.perf_counter()
    if params is None:
        params = network_params(here.weights.params, here.options, problem.image_shape)
    compile_stage(here.options, here.weights, problem, params)
    totals["compile"] += COMPILED.seconds_since(compiling)
    return params


def _record(walk: Walk, result, histories: list[dict], evaluations: list[int], totals: dict,
            started: float) -> None:
    """Adds a stage's `minimize` result to each image's history and evaluation count, and its
    seconds to the run's timings."""
    for i in range(len(evaluations)):
        for key, values in result.history.items():
            steps = values if walk.devices is None else [step[i] for step in values]
            histories[i].setdefault(key, []).extend(steps)
        evaluations[i] += (result.evaluations if walk.devices is None
                           else int(result.state.opt.num_fun_eval[i]))
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
        devices=1 if walk.devices is None else len(walk.devices),
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
      key: where randomness enters (the noise start, sliced Wasserstein's redraws); default
        ``jax.random.key(options.seed)``, which is what the command line makes of its seed.
      init_image: start from this image instead of ``options.optimization.init``.
      style_masks: one mask image per style (float [H, W] or [H, W, 3], any size; white = this
        style applies there), to paint different styles in different regions.
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
        `OptimizationError` if the loss becomes NaN or infinite (it carries the last good state).
    """
    options, content, styles, init_image, style_masks, content_mask = _checked_arguments(
        weights, options, content, styles, init_image, style_masks, content_mask)
    stages = check_inputs(content.shape, [s.shape for s in styles], options)
    started = time.perf_counter()  # the memory check compiles the run: count it as compiling
    _check_memory(stages, content, styles, weights, options, style_masks, content_mask,
                  previous, resume)
    walk = Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                callback, report_at, None, style_cache)
    return _walk_plan(walk, [content], styles, stages, [init_image], style_masks, content_mask,
                      resume, [previous] if previous else None,
                      COMPILED.seconds_since(started))[0]


def _checked_arguments(weights, options, content, styles, init_image, style_masks,
                       content_mask) -> tuple:
    """`stylize`'s options, images and masks checked (`jaxstyle.checks`), in the forms the run
    uses."""
    options = check_arguments(weights, options)
    content = check_image(content, "content")
    styles = [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    init_image = None if init_image is None else check_image(init_image, "init_image")
    style_masks, content_mask = check_masks(style_masks, content_mask, len(styles))
    return options, content, styles, init_image, style_masks, content_mask


def _check_memory(stages: tuple[Stage, ...], content: jax.Array, styles: list[jax.Array],
                  weights: VGGWeights, options: StyleOptions, style_masks, content_mask,
                  previous, resume: RunState | None) -> None:
    """`check_plan_memory` for `stylize`'s run, from the stage it starts at."""
    # With scales prepared ahead, the largest is compiled while the smaller ones run, and
    # checked then (by `minimize`, before it allocates anything).
    first = 0 if resume is None else resume.stage
    check_plan_memory(stages, content.shape, [s.shape for s in styles], weights, options,
                      style_masks is not None, content_mask is not None, len(previous or ()),
                      compile=not prepares_ahead(stages[first:], None))


def stylize_batch(contents: Sequence[jax.Array], styles: Sequence[jax.Array],
                  weights: VGGWeights, options: StyleOptions | None = None, *,
                  key: jax.Array | None = None, devices: Sequence[jax.Device] | None = None,
                  callback: Callable[[StylizeProgress], None] | None = None,
                  init_images: Sequence[jax.Array | None] | None = None,
                  previous: Sequence[Sequence[tuple[jax.Array, jax.Array]]] | None = None,
                  style_cache: dict | None = None) -> list[StylizeResult]:
    """Stylizes several content images with the same styles and options, batched and sharded.

    Images whose plans match (the same output size at every scale) run together: the
    single-image optimizer step is `jax.vmap`-ped, so every image keeps its own optimizer state
    and ends where a run of its own would, and the batch axis is sharded across `devices`. Each
    batch walks the plan's stages (scales, tiles) in lockstep.

    Args:
      contents: float [H_i, W_i, 3] RGB images in [0, 1].
      styles: the style images, as for `stylize`.
      weights: the network.
      options: as for `stylize`.
      key: as for `stylize`.
      devices: devices to shard each batch over (default: all local devices). A batch is padded
        with copies of its last image to a multiple of their number.
      callback: called with a `StylizeProgress` (its ``value`` summed over the batch, its
        ``history`` empty) after each chunk.
      init_images: a start image per content image (None entries: ``options.optimization.init``).
      previous: per content image, its temporal targets as `stylize` takes them (video's
        multi-pass mode); all images or none have them.
      style_cache: as for `stylize`.

    Returns:
      One `StylizeResult` per content image, in order; each equals what `stylize` gives for that
      image alone (up to floating-point reassociation in batched kernels).

    Raises:
      JaxstyleError: invalid inputs or options.
    """
    options, contents, styles = _checked_batch(weights, options, contents, styles)
    walk = Walk(weights, options, jax.random.key(options.seed) if key is None else key,
                callback, None, list(devices or jax.local_devices()), style_cache)
    init_images = list(init_images or [None] * len(contents))
    if previous is not None and (len(previous) != len(contents)
                                 or len({len(p or ()) for p in previous}) > 1):
        raise JaxstyleError("previous: one list of the same length per content image")
    return _walk_groups(walk, contents, styles, init_images, previous)


def _checked_batch(weights, options, contents, styles) -> tuple:
    """`stylize_batch`'s ``(options, contents, styles)`` checked (`jaxstyle.checks`)."""
    options = check_arguments(weights, options)
    if options.preset == NEURAL_NEIGHBOUR:
        raise OptionsError(f"preset: {NEURAL_NEIGHBOUR} does not run batches yet; stylize "
                           "each image on its own")
    if not contents:
        raise JaxstyleError("contents: no content images")
    contents = [check_image(c, f"contents[{i}]") for i, c in enumerate(contents)]
    styles = [check_image(s, f"styles[{i}]") for i, s in enumerate(styles)]
    return options, contents, styles


def _walk_groups(walk: Walk, contents: list[jax.Array], styles: list[jax.Array],
                 init_images: list, previous) -> list[StylizeResult]:
    """Walks the images whose plans match (the same output size at every scale) together, a
    batch per plan; the results in the images' order."""
    groups: dict[tuple, list[int]] = {}
    plans = {}
    for index, content in enumerate(contents):
        stages = check_inputs(content.shape, [s.shape for s in styles], walk.options)
        signature = tuple(stage.size for stage in stages)
        groups.setdefault(signature, []).append(index)
        plans[signature] = stages
    results: list[StylizeResult | None] = [None] * len(contents)
    for signature, indices in groups.items():
        try:
            done = _walk_plan(walk, [contents[i] for i in indices], styles, plans[signature],
                              [init_images[i] for i in indices], None, None, None,
                              None if previous is None or not previous[0]
                              else [previous[i] for i in indices])
        except OptimizationError as exc:
            size = signature[-1]
            raise OptimizationError(f"batch of {len(indices)} images at {size[1]}x{size[0]}: "
                                    f"{exc}") from None
        for index, result in zip(indices, done):
            results[index] = result
    return results
