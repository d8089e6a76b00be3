"""How a run's images meet the optimizer: one image as it is (`ONE_IMAGE`), or a batch whose
single-image step is `jax.vmap`-ped over a leading axis and sharded over devices (`Sharded`).

The driver (`jaxstyle.driver`) walks a list of images whichever the layout: one image is a
list of one. Only the layout knows whether the optimizer's arrays carry a batch axis: it pads a
batch to its devices (`padded`), stacks the stage's problems into one `jaxstyle.steps.Loss`
(`lay_out`), and splits what the optimizer returns back into images (`split`) or joins
per-image values into what it reports (`join`). One image keeps the single-image program, so
`stylize`'s results do not depend on batching; a batch's image ends where it would alone, up to
floating-point reassociation in batched kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxstyle.errors import JaxstyleError
from jaxstyle.problem import Problem
from jaxstyle.steps import Loss


class Batched(NamedTuple):
    """`batched_objective`'s static argument: the single-image objective it maps.

    Attributes:
      loss_fn: the single image's `Problem.loss_fn`.
      loss_static: its `Problem.loss_static`.
    """

    loss_fn: Callable
    loss_static: object


def batched_objective(x, params, shared, per_image, static: Batched):
    """One image's loss with its targets split into a part shared by the batch and a part of
    its own (the fields of `per_image` that are not None). `jax.vmap` maps x and `per_image`
    over the batch."""
    targets = type(shared)(*[s if p is None else p for s, p in zip(shared, per_image)])
    return static.loss_fn(x, params, targets, static.loss_static)


@dataclass(frozen=True)
class OneImage:
    """One image, optimized as it is: the single-image program, no batch axis."""

    vmapped: ClassVar[bool] = False
    device_count: ClassVar[int] = 1

    def padded(self, items: list) -> list:
        """`items` (one per image: here one) as laid out."""
        return items

    def split(self, values) -> list:
        """Each image's part of a value the optimizer returns: the value itself."""
        return [values]

    def join(self, items: Sequence) -> object:
        """The value the optimizer reports for each image's `items`: the one image's."""
        (item,) = items
        return item

    def split_history(self, history: dict[str, list], images: int) -> list[dict]:
        """Each image's loss history from the run's: the run's."""
        return [history]

    def lay_out(self, problems: list[Problem], params: dict,
                share_style: bool) -> tuple[Loss, jax.Array, Callable]:
        """``(loss, x0, place)`` of the stage's one problem; `place` puts arrays where the
        loss's arguments are (here: leaves them)."""
        (problem,) = problems
        return (Loss(problem.loss_fn, problem.loss_static, (params, problem.targets)),
                problem.x0, lambda tree: tree)


@dataclass(frozen=True)
class Sharded:
    """A batch: the single-image step `jax.vmap`-ped over a leading axis of images, sharded over
    `devices`, each image with its own optimizer state.

    Attributes:
      devices: the devices the batch axis is split between; a batch is padded with copies of
        its last image to a multiple of their number (the copies' results are dropped).
    """

    devices: tuple[jax.Device, ...]
    vmapped: ClassVar[bool] = True

    def __post_init__(self):
        if not self.devices:
            raise JaxstyleError("devices: no device to run the batch on")

    @property
    def device_count(self) -> int:
        return len(self.devices)

    def padded(self, items: list) -> list:
        """`items` (one per image) padded with copies of the last to a multiple of the
        devices."""
        return items + [items[-1]] * (-len(items) % len(self.devices))

    def split(self, values) -> list:
        """Each image's part of a value with the batch's leading axis."""
        return [values[i] for i in range(len(values))]

    def join(self, items: Sequence) -> np.ndarray:
        """Per-image arrays stacked along a new leading axis."""
        return np.stack([np.asarray(item) for item in items])

    def split_history(self, history: dict[str, list], images: int) -> list[dict]:
        """Each of the `images` images' loss history from the run's, whose every entry holds
        one value per image."""
        return [{k: [step[i] for step in v] for k, v in history.items()} for i in range(images)]

    def lay_out(self, problems: list[Problem], params: dict,
                share_style: bool) -> tuple[Loss, jax.Array, Callable]:
        """``(loss, x0, place)`` of a batch's problems (as many as `padded` makes): stacked and
        sharded over the devices, the targets split into what the images share (the style's,
        unless `share_style` is False: colour-matched styles) and what is each image's own
        (`Problem.image_targets`); `place` puts an array where the shared targets are."""
        first = problems[0]
        mesh = Mesh(np.array(self.devices), ("batch",))
        by_image = NamedSharding(mesh, PartitionSpec("batch"))
        everywhere = NamedSharding(mesh, PartitionSpec())
        own = first.image_targets + (() if share_style else ("style",))
        shared = first.targets._replace(**{field: None for field in own})
        per_image = type(first.targets)(*[_stack([getattr(p.targets, field) for p in problems])
                                          if field in own else None
                                          for field in first.targets._fields])
        loss = Loss(batched_objective, Batched(first.loss_fn, first.loss_static),
                    (jax.device_put(params, everywhere), jax.device_put(shared, everywhere),
                     jax.device_put(per_image, by_image)), (None, None, 0))
        x0 = jax.device_put(jnp.stack([p.x0 for p in problems]), by_image)
        return loss, x0, functools.partial(jax.device_put, device=everywhere)


Layout = OneImage | Sharded
"""How a run's images meet the optimizer."""

ONE_IMAGE = OneImage()
"""`stylize`'s layout."""


def _stack(trees: Sequence) -> object:
    """Per-image pytrees stacked leaf by leaf (None where the run has none)."""
    if trees[0] is None:
        return None
    return jax.tree_util.tree_map(lambda *t: jnp.stack(t), *trees)
