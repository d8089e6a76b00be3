"""The public surface: every exported name means one thing whatever was imported before, every
exported function runs on tiny inputs, and the pieces compose with jit, grad and vmap."""

import json
import pathlib
import subprocess
import sys
import types

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
    """One call of every exported function on tiny inputs, by name, each with what its result
    must be: a NumPy reference where one is a line long, else the shapes and the properties
    that only a working function gives (a distance near zero between a map and its own statistics
    and far from zero to another's, files that read back)."""
    config = options.loss_config(model_range=weights.preprocessing.model_range())
    x, targets = _targets(weights, config, content, style, options.loss_weights())
    rng = np.random.default_rng(0)
    f = jnp.asarray(rng.normal(size=(6, 5, 4)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(6, 5, 4)), jnp.float32)
    flat = np.asarray(f, np.float64).reshape(-1, 4)
    gram = flat.T @ flat / flat.size  # neural-style's F^T F / (C * H * W)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        jaxstyle.save_image(frames / f"f{i:03d}.png", np.roll(content, 2 * i, axis=1))
    jaxstyle.save_image(tmp_path / "style.png", style)
    problem = jaxstyle.prepare(content, [style], weights, options)
    hist, swd = jaxstyle.gram_histogram(1.0), jaxstyle.sliced_wasserstein(0)
    first_kernel = np.asarray(weights.params["conv1_1"]["kernel"])
    same_network = lambda w: w.network == "VGG19" and np.array_equal(
        np.asarray(w.params["conv1_1"]["kernel"]), first_kernel)
    image_shape = (24, 32, 3)

    def is_result(r):
        return (r.image.shape == image_shape and 0 <= r.image.min() and r.image.max() <= 1
                and len(r.history["total"]) == options.optimization.iterations
                and not np.allclose(r.image, content, atol=1e-3))

    def reads_back(path, image):
        return np.abs(jaxstyle.load_image(path) - image).max() <= 0.5 / 255 + 1e-6

    close = lambda value, want: np.isclose(float(value), want, rtol=1e-5, atol=1e-8)
    return {
        "content_mse": (lambda: jaxstyle.content_mse(f, f * 0.5),
                        lambda r: close(r, np.mean((0.5 * flat) ** 2))),
        "content_targets": (lambda: targets.content,
                            lambda r: set(r) == {"relu2_1"} and r["relu2_1"].shape == (12, 16, 16)),
        "convert": (lambda: jaxstyle.convert(DATA / "vgg19_tiny.pth", "torchvision"),
                    same_network),
        "find_weights": (lambda: jaxstyle.find_weights(DATA / "vgg19_tiny.pth"),
                         lambda r: r == DATA / "vgg19_tiny.pth"),
        "gram_distance": (lambda: jaxstyle.gram_distance(f, jaxstyle.gram_statistics(f * 2)),
                          lambda r: close(r, np.mean((gram - 4 * gram) ** 2))),
        "gram_histogram": (lambda: (hist.distance(f, hist.statistics(f, None)),
                                    hist.distance(f, hist.statistics(2 * f + 1, None))),
                           lambda r: 0 <= float(r[0]) < 1e-4 and float(r[1]) > 1.0),
        "gram_statistics": (lambda: jaxstyle.gram_statistics(f),
                            lambda r: np.allclose(r, gram, rtol=1e-5, atol=1e-7)),
        "init_params": (lambda: jaxstyle.init_params(jax.random.key(0), widths=(2, 2, 2, 2, 2)),
                        lambda r: sorted(r) == sorted(n for n in jaxstyle.layer_names(
                            (2, 2, 4, 4, 4)) if n.startswith("conv"))
                        and r["conv1_1"]["kernel"].shape == (3, 3, 3, 2)
                        and all(p["kernel"].shape[-1] == 2 for p in r.values())
                        and float(jnp.std(r["conv1_1"]["kernel"])) > 0),
        "layer_names": (lambda: jaxstyle.layer_names((2, 2, 3, 3, 3)),
                        lambda r: len(r) == 13 * 2 + 5 and r[:3] == ("conv1_1", "relu1_1",
                                                                     "conv1_2")
                        and "relu5_3" in r and "relu5_4" not in r and r[-1] == "pool5"),
        "load_image": (lambda: jaxstyle.load_image(tmp_path / "style.png"),
                       lambda r: r.dtype == np.float32 and reads_back(tmp_path / "style.png",
                                                                      style)),
        "load_weights": (lambda: jaxstyle.load_weights(DATA / "vgg19_tiny.pth", "torchvision"),
                         same_network),
        # The photo scored against itself: no content distance, the photo's own style distance.
        "measure": (lambda: jaxstyle.measure(weights, content, content, [style], options),
                    lambda r: abs(r.content["relu2_1"]) < 1e-6
                    and np.isclose(r.style_gram_ratio, 1.0) and set(r.style_gram) == {
                        "relu1_1", "relu2_1"}),
        "minimize": (lambda: jaxstyle.minimize(
            jaxstyle.Loss(problem.loss_fn, problem.loss_static, (weights.params, problem.targets)),
            problem.x0, options.optimizer_config(weights.preprocessing.model_range()), 2,
            memory_limit=0),
                     lambda r: r.x.shape == problem.x0.shape and len(r.history["total"]) == 2
                     and r.history["total"][-1] < r.history["total"][0]
                     and not np.array_equal(r.x, problem.x0)),
        "network_params": (lambda: jaxstyle.network_params(weights.params, options, x.shape),
                           lambda r: set(r) == set(weights.params) and np.array_equal(
                               r["conv1_1"]["kernel"], first_kernel)),
        "objective": (lambda: jaxstyle.objective(x, weights.params, targets, config),
                      lambda r: r[0].shape == () and np.isfinite(float(r[0]))
                      and set(r[1]) >= {"content", "style", "tv"}
                      and abs(float(r[1]["content"])) < 1e-8 and float(r[1]["style"]) > 0),
        "plan": (lambda: jaxstyle.plan(content.shape, options),
                 lambda r: [(s.size, s.iterations) for s in r] == [((24, 32), 3)]),
        "prepare": (lambda: problem, lambda r: r.x0.shape == image_shape),
        "random_weights": (lambda: jaxstyle.random_weights(0).params["conv5_4"],
                           lambda r: r["kernel"].shape == (3, 3, 512, 512)
                           and float(jnp.std(r["kernel"])) > 0),
        "region_targets": (lambda: jaxstyle.region_targets(
            weights.params, x, [weights.preprocessing.to_model(jnp.asarray(style))], config,
            weights=options.loss_weights()),
                           lambda r: np.array_equal(r.content["relu2_1"],
                                                    targets.content["relu2_1"])
                           and len(r.style) == 1 and set(r.style[0]) == {"relu1_1", "relu2_1"}),
        "resolve_weights": (lambda: jaxstyle.resolve_weights(converted),
                            lambda r: same_network(r[0]) and str(r[1]) == converted),
        "save_image": (lambda: jaxstyle.save_image(tmp_path / "out.png", content),
                       lambda r: reads_back(tmp_path / "out.png", content)),
        # Self-similarity is a cosine's: a scaled copy has the same, another map does not.
        "self_similarity_loss": (lambda: (jaxstyle.self_similarity_loss(f, f * 0.5),
                                          jaxstyle.self_similarity_loss(f, g)),
                                 lambda r: abs(float(r[0])) < 1e-6 and float(r[1]) > 1e-3),
        "sliced_wasserstein": (lambda: (swd.distance(f, swd.prepare(swd.statistics(f, None))),
                                        swd.distance(f, swd.prepare(
                                            swd.statistics(2 * f + 1, None)))),
                               lambda r: 0 <= float(r[0]) < 1e-4 and float(r[1]) > 1.0),
        "style_targets": (lambda: targets.style,
                          lambda r: len(r) == 1 and {k: v.shape for k, v in r[0].items()} == {
                              "relu1_1": (8, 8), "relu2_1": (16, 16)}),
        "stylize": (lambda: jaxstyle.stylize(content, [style], weights, options), is_result),
        "stylize_batch": (lambda: jaxstyle.stylize_batch([content, content], [style], weights,
                                                         options),
                          lambda r: len(r) == 2 and all(map(is_result, r))),
        "stylize_video": (lambda: jaxstyle.stylize_video(
            str(frames), [str(tmp_path / "style.png")], str(tmp_path / "video_out"),
            options.replace(iterations=2), lambda message: None, converted,
            progress_bar=False),
                          lambda r: r == 0 and len(list((tmp_path / "video_out").glob(
                              "*.png"))) == 2),
        "sweep": (lambda: jaxstyle.sweep(content, [style], weights, options,
                                         [("style_strength", (0.0, 1.0))]),
                  lambda r: [c.settings for c in r] == [{"style_strength": 0.0},
                                                        {"style_strength": 1.0}]
                  and all(c.image.shape == image_shape for c in r)
                  and not np.array_equal(r[0].image, r[1].image)),
        "temporal_loss": (lambda: jaxstyle.temporal_loss(x, x + 1.0, jnp.ones(x.shape[:2])),
                          lambda r: close(r, 1.0)),
        "tv_loss": (lambda: jaxstyle.tv_loss(x),
                    lambda r: close(r, np.abs(np.diff(x, axis=0)).sum()
                                    + np.abs(np.diff(x, axis=1)).sum())),
        "vgg_features": (lambda: jaxstyle.vgg_features(weights.params, x, ["relu2_1"]),
                         lambda r: set(r) == {"relu2_1"} and np.allclose(
                             r["relu2_1"], targets.content["relu2_1"], rtol=1e-5, atol=1e-6)),
    }


@pytest.mark.slow
def test_every_exported_function_runs_on_tiny_inputs(tmp_path, tiny, converted):
    weights, options, content, style = tiny
    paths = _happy_paths(tmp_path, weights, options, content, style, converted)
    functions = [name for name in jaxstyle.__all__ if callable(getattr(jaxstyle, name))
                 and not isinstance(getattr(jaxstyle, name), type)]
    assert sorted(paths) == sorted(functions), "every exported function needs a happy path"
    wrong = []
    for name in functions:
        call, check = paths[name]
        if not check(call()):
            wrong.append(name)
    assert not wrong, f"results not as expected: {wrong}"


REMOVED = ("DEPRECATED", "content_loss", "style_loss", "gram_loss", "gram_matrix",
           "vgg19_features")
"""Old names and synonyms: jaxstyle was never released, so none kept a deprecation path."""


def test_removed_names_and_synonyms_are_gone():
    assert not set(REMOVED) & {*jaxstyle.__all__, *dir(jaxstyle)}
    for name in REMOVED:
        with pytest.raises(AttributeError, match=name):
            getattr(jaxstyle, name)
    for module, name in [("losses", "content_loss"), ("losses", "style_loss"),
                         ("losses", "gram_loss"), ("losses", "gram_matrix"),
                         ("vgg", "vgg19_features"), ("weights", "DEFAULT_SOURCE_ORDER")]:
        assert not hasattr(getattr(jaxstyle, module), name), f"jaxstyle.{module}.{name}"


def test_no_source_file_keeps_a_deprecation_path():
    root = pathlib.Path(jaxstyle.__file__).parent
    found = [f"{path.relative_to(root)}:{number}" for path in sorted(root.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if "deprecat" in line.lower()]
    assert not found, f"deprecation paths left: {found}"


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
