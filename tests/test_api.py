"""The public surface: every exported name means one thing whatever was imported before, every
exported function runs on tiny inputs, and the pieces compose with jit, grad and vmap."""

import json
import subprocess
import sys
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, smooth_image

import jaxstyle

ORDERS = r"""
import importlib, json, random, sys, types
import jaxstyle
order = list(jaxstyle.SUBMODULES)
random.Random(int(sys.argv[1])).shuffle(order)
for name in order:
    importlib.import_module(f"jaxstyle.{name}")
    # the import that set off the trap: a submodule's class imported by its full path
    from jaxstyle.driver import StylizeResult  # noqa: F401
kinds = {name: type(getattr(jaxstyle, name)).__name__ for name in jaxstyle.__all__}
modules = {name: isinstance(getattr(jaxstyle, name), types.ModuleType)
           for name in jaxstyle.SUBMODULES}
print(json.dumps({"order": order, "kinds": kinds, "modules": modules}))
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_name_means_one_thing_whatever_was_imported_first(seed):
    # Once, `jaxstyle.stylize` was the function or the module depending on import order.
    done = subprocess.run([sys.executable, "-c", ORDERS, str(seed)], capture_output=True,
                          text=True, check=True)
    report = json.loads(done.stdout.splitlines()[-1])
    assert not [name for name, kind in report["kinds"].items() if kind == "module"]
    assert report["kinds"]["stylize"] == "function" and report["kinds"]["plan"] == "function"
    assert all(report["modules"].values())  # every submodule reachable as jaxstyle.<name>
    assert not set(jaxstyle.SUBMODULES) & set(jaxstyle.__all__)


def test_exports_are_sorted_and_resolve():
    assert jaxstyle.__all__ == sorted(jaxstyle.__all__)
    for name in jaxstyle.__all__:
        assert not isinstance(getattr(jaxstyle, name), types.ModuleType), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        jaxstyle.nope  # noqa: B018


@pytest.fixture(scope="module")
def tiny():
    from jaxstyle import load_weights

    weights = load_weights(DATA / "vgg19_tiny.pth", "torchvision")
    options = jaxstyle.StyleOptions(size=32, iterations=3, content_layers=("relu2_1",),
                                    style_layers=("relu1_1", "relu2_1"))
    return weights, options, smooth_image(24, 32, 0), smooth_image(32, 32, 1)


@pytest.fixture
def converted(tiny_weights_file):
    return str(tiny_weights_file)


def _targets(weights, config, content, style, loss_weights):
    x = weights.preprocessing.to_model(jnp.asarray(content))
    s = weights.preprocessing.to_model(jnp.asarray(style))
    return x, jaxstyle.Targets(jaxstyle.content_targets(weights.params, x, config),
                               (jaxstyle.style_targets(weights.params, [s], config),),
                               weights=loss_weights)


def _happy_paths(tmp_path, weights, options, content, style, converted):
    """One call of every exported function on tiny inputs, by name."""
    config = options.loss_config(model_range=weights.preprocessing.model_range())
    x, targets = _targets(weights, config, content, style, options.loss_weights())
    f = jnp.asarray(np.random.default_rng(0).normal(size=(6, 5, 4)), jnp.float32)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        jaxstyle.save_image(frames / f"f{i:03d}.png", np.roll(content, 2 * i, axis=1))
    jaxstyle.save_image(tmp_path / "style.png", style)
    problem = jaxstyle.prepare(content, [style], weights, options)
    return {
        "content_mse": lambda: jaxstyle.content_mse(f, f * 0.5),
        "content_targets": lambda: targets.content,
        "convert": lambda: jaxstyle.convert(DATA / "vgg19_tiny.pth", "torchvision"),
        "find_weights": lambda: jaxstyle.find_weights(DATA / "vgg19_tiny.pth"),
        "gram_histogram": lambda: jaxstyle.gram_histogram(1.0).distance(
            f, jaxstyle.gram_histogram(1.0).statistics(f, None)),
        "gram_loss": lambda: jaxstyle.gram_loss(f, jaxstyle.gram_matrix(f * 2)),
        "gram_matrix": lambda: jaxstyle.gram_matrix(f),
        "init_params": lambda: jaxstyle.init_params(jax.random.key(0), widths=(2, 2, 2, 2, 2)),
        "layer_names": lambda: jaxstyle.layer_names((2, 2, 3, 3, 3)),
        "load_image": lambda: jaxstyle.load_image(tmp_path / "style.png"),
        "load_weights": lambda: jaxstyle.load_weights(DATA / "vgg19_tiny.pth", "torchvision"),
        "measure": lambda: jaxstyle.measure(weights, content, content, [style], options),
        "minimize": lambda: jaxstyle.minimize(
            problem.loss_fn, problem.loss_static, problem.x0, (weights.params, problem.targets),
            options.optimizer_config(weights.preprocessing.model_range()), 2, memory_limit=0),
        "network_params": lambda: jaxstyle.network_params(weights.params, options, x.shape),
        "objective": lambda: jaxstyle.objective(x, weights.params, targets, config),
        "plan": lambda: jaxstyle.plan(content.shape, options),
        "prepare": lambda: problem,
        "random_weights": lambda: jaxstyle.random_weights(0).params["conv5_4"],
        "region_targets": lambda: jaxstyle.region_targets(
            weights.params, x, [weights.preprocessing.to_model(jnp.asarray(style))], config,
            weights=options.loss_weights()),
        "resolve_weights": lambda: jaxstyle.resolve_weights(converted),
        "save_image": lambda: jaxstyle.save_image(tmp_path / "out.png", content),
        "self_similarity_loss": lambda: jaxstyle.self_similarity_loss(f, f * 0.5),
        "sliced_wasserstein": lambda: jaxstyle.sliced_wasserstein(0).distance(
            f, jaxstyle.sliced_wasserstein(0).prepare(
                jaxstyle.sliced_wasserstein(0).statistics(f, None))),
        "style_targets": lambda: targets.style,
        "stylize": lambda: jaxstyle.stylize(content, [style], weights, options),
        "stylize_batch": lambda: jaxstyle.stylize_batch([content, content], [style], weights,
                                                        options),
        "stylize_video": lambda: jaxstyle.stylize_video(
            str(frames), [str(tmp_path / "style.png")], str(tmp_path / "video_out"),
            options.replace(iterations=2), lambda message: None, converted,
            progress_bar=False),
        "sweep": lambda: jaxstyle.sweep(content, [style], weights, options,
                                        [("style_strength", (0.0, 1.0))]),
        "temporal_loss": lambda: jaxstyle.temporal_loss(x, x + 1.0, jnp.ones(x.shape[:2])),
        "tv_loss": lambda: jaxstyle.tv_loss(x),
        "vgg_features": lambda: jaxstyle.vgg_features(weights.params, x, ["relu2_1"]),
    }


def test_every_exported_function_runs_on_tiny_inputs(tmp_path, tiny, converted):
    weights, options, content, style = tiny
    paths = _happy_paths(tmp_path, weights, options, content, style, converted)
    functions = [name for name in jaxstyle.__all__ if callable(getattr(jaxstyle, name))
                 and not isinstance(getattr(jaxstyle, name), type)
                 and name not in jaxstyle.DEPRECATED]
    assert sorted(paths) == sorted(functions), "every exported function needs a happy path"
    for name in functions:
        assert paths[name]() is not None, name


def test_deprecated_names_warn_and_still_work(tiny):
    weights, _, content, _ = tiny
    f = jnp.ones((4, 4, 3))
    for name, call in [("content_loss", lambda: jaxstyle.content_loss(f, f * 2)),
                       ("style_loss", lambda: jaxstyle.style_loss(f, jnp.zeros((3, 3)))),
                       ("vgg19_features", lambda: jaxstyle.vgg19_features(
                           weights.params, jnp.asarray(content)[None], ["relu1_1"]))]:
        with pytest.warns(DeprecationWarning, match=f"{name} is deprecated"):
            assert call() is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(jaxstyle.style_loss.__wrapped__(f, jnp.zeros((3, 3))),
                                   jaxstyle.gram_loss(f, jnp.zeros((3, 3))))


def test_objective_composes_with_jit_grad_and_vmap(tiny):
    weights, options, content, style = tiny
    config = options.loss_config(model_range=weights.preprocessing.model_range())
    x, targets = _targets(weights, config, content, style, options.loss_weights())
    loss = jax.jit(lambda img: jaxstyle.objective(img, weights.params, targets, config)[0])
    (value, parts), grad = jax.value_and_grad(jaxstyle.objective, has_aux=True)(
        x, weights.params, targets, config)
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))
    np.testing.assert_allclose(loss(x), value, rtol=1e-5)
    batch = jnp.stack([x, x + 1.0])
    values = jax.vmap(loss)(batch)
    np.testing.assert_allclose(values[0], value, rtol=1e-5)
    grads = jax.vmap(jax.grad(loss))(batch)
    np.testing.assert_allclose(grads[0], grad, rtol=1e-4, atol=1e-7)
    assert set(parts) >= {"content", "style", "tv"}
