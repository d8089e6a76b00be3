"""Many content images in one process: shared style targets, `jax.vmap`, sharded over devices.

Images that come out at the same size form one batch: the single-image optimizer step is
`jax.vmap`-ped, so every image keeps its own optimizer state and ends where a run of its own
would, and the batch axis is sharded across all local devices (`jax.sharding`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxstyle.errors import JaxstyleError, OptimizationError
from jaxstyle.optimize import minimize
from jaxstyle.options import StyleOptions
from jaxstyle.stylize import (
    StylizeResult,
    _pick_output,
    check_inputs,
    check_network,
    memory_limit_bytes,
    optimizer_config,
    prepare,
    redrawn_args,
)
from jaxstyle.weights import VGGWeights

_SHARED = ("style", "style_masks", "style_weights", "content_mask")


def batched_objective(x, params, shared: dict, per_image: dict, static):
    """One image's loss with its targets split into shared and per-image parts.

    ``static`` is ``(loss_fn, loss_static)`` of the single-image problem; `jax.vmap` maps x and
    `per_image` over the batch while `params` and `shared` stay unbatched.
    """
    loss_fn, loss_static = static
    return loss_fn(x, params, {**shared, **per_image}, loss_static)


def _redrawn_shared(args: tuple, options: StyleOptions, placement) -> Callable | None:
    """Per-chunk arguments when the style loss redraws (`jaxstyle.stylize.redrawn_args`) and
    the style targets are shared by the batch; per-image style targets (luminance or colour
    matching) keep their first draw."""
    params, shared, per_image = args
    if "style" not in shared:
        return None
    redraw = redrawn_args((params, shared), options)
    if redraw is None:
        return None
    return lambda iteration: (params, jax.device_put(redraw(iteration)[1], placement), per_image)


def _groups(shapes: Sequence[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    return groups


def stylize_batch(
    contents: Sequence[jax.Array],
    styles: Sequence[jax.Array],
    weights: VGGWeights,
    options: StyleOptions | None = None,
    *,
    devices: Sequence[jax.Device] | None = None,
    callback: Callable[[int, int, float], None] | None = None,
) -> list[StylizeResult]:
    """Stylizes several content images with the same styles and options.

    Args:
      contents: float [H_i, W_i, 3] RGB images in [0, 1]; those with the same output size run
        together as one batch.
      styles: the style images, as for `jaxstyle.stylize`.
      weights: the network.
      options: as for `jaxstyle.stylize` (``scales`` and masks are not supported here).
      devices: devices to shard each batch over (default: all local devices). A batch is padded
        with copies of its last image to a multiple of their number.
      callback: ``(iteration, total_iterations, summed loss)`` after each chunk.

    Returns:
      One `StylizeResult` per content image, in order; each equals what `stylize` gives for that
      image alone (up to floating-point reassociation in batched kernels).

    Raises:
      JaxstyleError: invalid inputs or options.
    """
    options = options or StyleOptions()
    if options.scales:
        raise JaxstyleError("batch: multi-scale runs are not supported; run them one by one")
    if not contents:
        raise JaxstyleError("batch: no content images")
    check_network(weights, options)
    devices = list(devices or jax.local_devices())
    mesh = Mesh(np.array(devices), ("batch",))
    by_image = NamedSharding(mesh, PartitionSpec("batch"))
    everywhere = NamedSharding(mesh, PartitionSpec())
    content_independent = not (options.match_style_colors or options.original_colors == "luminance")
    shapes = [check_inputs(jnp.shape(c), [jnp.shape(s) for s in styles], options)[0]
              for c in contents]
    results: list[StylizeResult | None] = [None] * len(contents)
    for shape, indices in _groups(shapes).items():
        start = time.perf_counter()
        problems = [prepare(contents[indices[0]], styles, weights, options)]
        shared_style = problems[0].targets["style"] if content_independent else None
        problems += [prepare(contents[i], styles, weights, options, style_targets=shared_style)
                     for i in indices[1:]]
        padded = problems + [problems[-1]] * (-len(problems) % len(devices))

        def stacked(key):
            return jax.tree_util.tree_map(lambda *t: jnp.stack(t),
                                          *[p.targets[key] for p in padded])

        shared = {k: problems[0].targets[k] for k in _SHARED}
        per_image = {"content": stacked("content")}
        if not content_independent:  # style targets differ per image: map them too
            del shared["style"]
            per_image["style"] = stacked("style")
        x0 = jax.device_put(jnp.stack([p.x0 for p in padded]), by_image)
        args = (jax.device_put(weights.params, everywhere), jax.device_put(shared, everywhere),
                jax.device_put(per_image, by_image))
        targets_seconds = time.perf_counter() - start
        try:
            result = minimize(
                batched_objective, (problems[0].loss_fn, problems[0].static), x0, args,
                optimizer_config(options, weights.preprocessing, problems[0].pixel_units),
                options.iterations, chunk=options.progress_every, batch_axes=(None, None, 0),
                memory_limit=memory_limit_bytes(options),
                chunk_args=_redrawn_shared(args, options, everywhere),
                callback=(lambda p: callback(p.iteration, p.total_iterations, p.value))
                if callback else None,
            )
        except OptimizationError as exc:
            raise OptimizationError(f"batch of {len(indices)} images at {shape[1]}x{shape[0]}: "
                                    f"{exc}") from None
        state = result.state
        chosen = _pick_output(result, options)
        for slot, (index, problem) in enumerate(zip(indices, problems)):
            final = {"total": float(state.opt.value[slot])}
            final.update({k: float(v[slot]) for k, v in state.opt.aux.items()})
            results[index] = StylizeResult(
                image=problem.to_image(chosen[slot]),
                history={k: [step[slot] for step in v] for k, v in result.history.items()},
                losses=final,
                evaluations=int(state.opt.num_fun_eval[slot]),
                timings={"targets": targets_seconds, "compile": result.compile_seconds,
                         "optimize": result.run_seconds,
                         "total": time.perf_counter() - start},
                weights_source=weights.source,
                devices=len(devices),
            )
    return results
