"""Where a run stands, in memory: enough to continue it exactly (`RunState`), and saved
optimizer-state leaves given their structure back (`restore_state`).

Writing and reading a run's state to and from a file is `jaxstyle.checkpoint`'s work.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from jaxstyle.errors import CheckpointError


@dataclass
class RunState:
    """Where a run stands: enough to continue it exactly.

    A batch's (`jaxstyle.stylize_batch`) holds the same with a leading axis of images, as laid
    out (padded to its devices, `jaxstyle.layouts`), on `x`, `state`'s leaves and `canvas`,
    and one loss per image in each `history` entry.

    Attributes:
      iteration: iterations of the whole run done (through all stages of its plan).
      x: the current stage's variable (model-space image [h, w, 3], or luminance [h, w, 1]).
      state: the optimizer's state (a pytree).
      history: the loss after each iteration so far, by component.
      stage: which stage of the plan (`jaxstyle.stages.Stage.index`) is running.
      canvas: float32 [H, W, 3] RGB, the stage's scale's picture when the stage started (None:
        rebuild it, only valid for the first stage).
    """

    iteration: int
    x: np.ndarray
    state: object
    history: dict[str, list[float]]
    stage: int = 0
    canvas: np.ndarray | None = None


def restore_state(leaves: list, like) -> object:
    """Gives saved optimizer-state leaves the structure of `like` (e.g. a freshly built state).

    Raises:
      CheckpointError: the leaves do not fit (another optimizer, history size or image size).
    """
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    if len(like_leaves) != len(leaves) or any(
        np.shape(a) != np.shape(b) or np.asarray(b).dtype != a.dtype
        for a, b in zip(like_leaves, leaves)
    ):
        raise CheckpointError("the checkpoint's optimizer state does not fit this run")
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(b) for b in leaves])
