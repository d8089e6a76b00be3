"""A change of any weight recompiles nothing: the weights are traced arguments of the objective.

Counts JAX's lowerings (jit cache misses, each one a compilation whether or not the persistent
cache then has it) across `stylize` runs that differ only in one weight.
"""

import contextlib

import jax
import numpy as np
import pytest
from conftest import smooth_image

from jaxstyle import StyleOptions, stylize, stylize_batch

LOWERING = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BASE = dict(size=32, iterations=2, progress_every=2, content_layers=("relu2_1",),
            style_layers=("relu1_1", "relu2_1"), style_blend_weights=(1.0, 1.0))
CHANGES = {
    "style_strength": 7.0,
    "content_weight": 2.5,
    "style_weight": 3.0,
    "tv_weight": 0.05,
    "style_layer_weights": (2.0, 0.5),
    "temporal_weight": 4.0,
    "style_blend_weights": (3.0, 1.0),
}


@contextlib.contextmanager
def counted_lowerings():
    """Yields a list that holds the name of every function JAX lowers inside the block."""
    lowered = []

    def listen(event: str, _seconds: float, **kwargs) -> None:
        if event == LOWERING:
            lowered.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield lowered
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@pytest.mark.parametrize("preset,regions,scales", [("balanced", False, (24, 32)),
                                                   ("neural-style", True, None)])
def test_a_weight_change_recompiles_nothing(tiny_weights, preset, regions, scales):
    content = smooth_image(24, 32, 0)
    styles = [smooth_image(32, 32, 1), smooth_image(32, 32, 2)]
    masks = dict(style_masks=[np.tri(24, 32), 1 - np.tri(24, 32)]) if regions else {}
    previous = [(smooth_image(24, 32, 3), np.full((24, 32), 0.5, np.float32))]
    # Two scales: the second is prepared and compiled in a thread while the first runs.
    base = StyleOptions(preset=preset, scales=scales, **BASE)

    def run(options: StyleOptions) -> np.ndarray:
        return stylize(content, styles, tiny_weights, options, previous=previous, **masks).image

    first = run(base)
    for name, value in CHANGES.items():
        with counted_lowerings() as lowered:
            image = run(base.replace(**{name: value}))
        assert lowered == [], f"{name}: compiled {lowered}"
        assert np.abs(image - first).max() > 0, f"{name}: the change changed nothing"


@pytest.mark.slow
def test_a_batch_with_another_strength_recompiles_nothing(tiny_weights):
    contents = [smooth_image(24, 32, 0), smooth_image(24, 32, 4)]
    styles = [smooth_image(32, 32, 1)]
    options = StyleOptions(**{**BASE, "style_blend_weights": None})
    first = stylize_batch(contents, styles, tiny_weights, options)
    with counted_lowerings() as lowered:
        again = stylize_batch(contents, styles, tiny_weights, options.replace(style_strength=3.0))
    assert lowered == []
    assert np.abs(again[0].image - first[0].image).max() > 0


@pytest.mark.slow
def test_a_picture_of_a_nearby_shape_compiles_only_its_last_scale(tiny_weights):
    """Coarse scales are in shape buckets (`jaxstyle.resampling.fit_bucket`): after a 60x90
    picture, one of 62x90 compiles the optimizer of its last scale only (its coarse scale is
    32x48 like the first's), where one of 40x90 (24x48 at the coarse scale) compiles both."""
    styles = [smooth_image(32, 32, 1)]
    options = StyleOptions(**{**BASE, "size": 96, "style_blend_weights": None},
                           scales=(48, 96), scale_iterations=(2,))

    def chunks_compiled(height: int) -> int:
        with counted_lowerings() as lowered:
            stylize(smooth_image(height, 90, 0), styles, tiny_weights, options)
        return sum(name == "jit(run_chunk)" for name in lowered)

    stylize(smooth_image(60, 90, 0), styles, tiny_weights, options)
    assert chunks_compiled(62) == 1
    assert chunks_compiled(40) == 2
