"""A run as a plan: the stages (scale x tile) a stylization walks through, computed up front.

`plan` is a pure function of the content's size and the options. The driver
(`jaxstyle.stylize`) walks the stages in order: build the stage's problem, minimize, paste the
result into the canvas. Scales, tiles, masks, colour modes and resuming then combine without
special cases, and a checkpoint only has to record which stage it stopped in.
"""

from __future__ import annotations

from typing import NamedTuple

from jaxstyle.options import StyleOptions
from jaxstyle.resampling import fit_bucket, fit_longest_side


class Stage(NamedTuple):
    """One optimization of a run: one tile of one scale.

    Attributes:
      index: position in the plan.
      scale: which scale (0 for single-scale runs).
      size: (H, W) of this scale's whole output.
      tile: which tile of the scale, in raster order (0 without tiling).
      tiles: how many tiles the scale has (1 without tiling).
      window: (top, left, height, width) of the tile in the scale's output.
      iterations: optimizer iterations of this stage.
      offset: iterations of the whole run before this stage.
      coarse: whether a finer scale follows: then `size` and the style images' sizes are
        rounded to shape buckets (`jaxstyle.resampling.fit_bucket`), so that pictures of nearby
        shapes share what is compiled for a coarse scale.
      final: whether this is the neural-neighbour route's last pass (``final_pass``): a scale
        of its own after the last, at the same size, with another objective
        (`jaxstyle.neighbour_layers`).
    """

    index: int
    scale: int
    size: tuple[int, int]
    tile: int
    tiles: int
    window: tuple[int, int, int, int]
    iterations: int
    offset: int
    coarse: bool = False
    final: bool = False


def output_shape(content_shape: tuple[int, ...], size: int | None) -> tuple[int, int]:
    """(H, W) of an output whose longest side is `size` (the content's own size if 0/None)."""
    if size:
        return fit_longest_side(content_shape, size)
    return (int(content_shape[0]), int(content_shape[1]))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `length` with at least `overlap`."""
    if length <= tile:
        return [0]
    step = tile - overlap
    count = -(-(length - overlap) // step)  # ceil
    last = length - tile
    return [round(i * last / (count - 1)) for i in range(count)]


def windows(shape: tuple[int, int], options: StyleOptions) -> list[tuple[int, int, int, int]]:
    """The tiles of an output of `shape` as (top, left, height, width), in raster order; the
    whole output when it fits in ``options.plan.tile_size`` (or tiling is off)."""
    tile = options.plan.tile_size
    if not tile or max(shape) <= tile:
        return [(0, 0, shape[0], shape[1])]
    rows = tile_starts(shape[0], tile, options.plan.tile_overlap)
    cols = tile_starts(shape[1], tile, options.plan.tile_overlap)
    return [(top, left, min(tile, shape[0]), min(tile, shape[1])) for top in rows for left in cols]


COARSEST_SHORT_SIDE = 32
"""An automatic schedule's coarser scales keep a shorter side of at least this many pixels
(relu5_1 then sees 2 positions across), so very wide or tall pictures get fewer scales."""
SMALLEST_COARSE = 64
"""Outputs under twice ``coarsest`` still start at half their size, down to this longest side,
so that small outputs (a sweep's cells, a studio preview) paint as the large ones do."""


def coarse_to_fine(shape: tuple[int, int], coarsest: int) -> tuple[int, ...]:
    """Longest sides of the automatic schedule for an output of `shape` (H, W), coarse to fine:
    the output's longest side halved while it stays at least `coarsest`, or once for an output
    under twice `coarsest` if that leaves `SMALLEST_COARSE` px or more, each coarser scale with
    a shorter side of at least `COARSEST_SHORT_SIDE`; the output's own alone when `coarsest`
    is 0."""
    sizes = [max(shape)]
    while coarsest and (half := sizes[-1] // 2) >= min(coarsest, SMALLEST_COARSE) and (
            half >= coarsest or len(sizes) == 1) and min(
            fit_longest_side(shape, half)) >= COARSEST_SHORT_SIDE:
        sizes.append(half)
    return tuple(reversed(sizes))


def scale_sizes(content_shape: tuple[int, ...], options: StyleOptions
                ) -> list[tuple[int | None, int]]:
    """(longest side, iterations) of each scale.

    ``options.plan.scales`` with ``scale_iterations`` (one count for all, or one each; default
    ``iterations`` each) when given; else the automatic schedule (`coarse_to_fine`) from
    ``options.plan.coarsest`` up to the output's size, whose finest scale runs at most
    ``finest_iterations`` and each coarser one at most twice the next finer's (all at most
    ``iterations``; one ``scale_iterations`` count replaces them all).
    """
    if options.plan.scales:
        counts = options.plan.scale_iterations or (options.optimization.iterations,)
        counts = counts * len(options.plan.scales) if len(counts) == 1 else counts
        return list(zip(options.plan.scales, counts))
    sizes = coarse_to_fine(output_shape(content_shape, options.plan.size),
                           options.plan.coarsest or 0)
    if len(sizes) == 1:
        return [(options.plan.size,
                 (options.plan.scale_iterations or (options.optimization.iterations,))[0])]
    if options.plan.scale_iterations:
        return [(size, options.plan.scale_iterations[0]) for size in sizes]
    finest = options.plan.finest_iterations or options.optimization.iterations
    return [(size, min(options.optimization.iterations, finest * 2 ** (len(sizes) - 1 - i)))
            for i, size in enumerate(sizes)]


def plan(content_shape: tuple[int, ...], options: StyleOptions) -> tuple[Stage, ...]:
    """The stages of a run on a content image of shape [H, W, ...].

    Every tile of a scale gets the scale's iteration count, so a scale of 6 tiles costs 6 times
    its iterations; `Stage.offset` counts them through the whole run. Every scale but the last
    has a bucketed shape (`Stage.coarse`); the last is the output's exact shape. With
    ``final_pass`` one more stage follows the last at its size (`Stage.final`).

    Returns:
      The stages in the order they run: scales coarse to fine, tiles in raster order.
    """
    stages, offset = [], 0
    sizes = scale_sizes(content_shape, options)
    for scale, (size, iterations) in enumerate(sizes):
        coarse = scale < len(sizes) - 1 and bool(size)
        shape = fit_bucket(content_shape, size) if coarse else output_shape(content_shape, size)
        parts = windows(shape, options)
        for tile, window in enumerate(parts):
            stages.append(Stage(len(stages), scale, shape, tile, len(parts), window, iterations,
                                offset, coarse))
            offset += iterations
    if options.plan.final_pass:  # only with the neural-neighbour preset (`StyleOptions`)
        last = stages[-1]
        stages.append(last._replace(index=len(stages), scale=len(sizes),
                                    iterations=options.plan.final_pass, offset=offset, final=True))
    return tuple(stages)


def total_iterations(stages: tuple[Stage, ...]) -> int:
    """Iterations of the whole plan."""
    return stages[-1].offset + stages[-1].iterations if stages else 0


def continued(options: StyleOptions, content_shape: tuple[int, ...], stage_index: int,
              iteration: int, more: int) -> StyleOptions:
    """The options of a run continued `more` iterations past whole-run `iteration`, where it
    ended in stage `stage_index` of the plan `options` make for `content_shape`.

    A single scale's ``iterations`` grows; a schedule of scales is written out (``scales``,
    ``scale_iterations``) with the scale that ended growing (``final_pass`` grows when the run
    ended in that pass), so every earlier stage keeps its
    place in the plan and a run resumed from the state continues bit for bit.
    """
    stage = plan(content_shape, options)[stage_index]
    if stage.final:
        return options.replace(final_pass=iteration - stage.offset + more)
    sizes = scale_sizes(content_shape, options)
    if len(sizes) == 1:
        return options.replace(iterations=iteration + more)
    counts = [count for _, count in sizes]
    counts[stage.scale] = iteration - stage.offset + more
    return options.replace(scales=tuple(size for size, _ in sizes),
                           scale_iterations=tuple(counts),
                           iterations=max(options.optimization.iterations, *counts))
