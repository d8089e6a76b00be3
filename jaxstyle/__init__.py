"""jaxstyle: neural style transfer (Gatys et al. 2015) on JAX.

The public surface is the names in `__all__`: the network (`vgg_features`), the objective
(`objective`, its `Targets`, `LossWeights` and `LossConfig`, the style losses), the run
(`stylize`, `stylize_batch`, `prepare`, `network_params`, `minimize`, `StyleOptions`), weights,
images, quality and video.
Every function takes one image (float32 [H, W, 3]); batch with `jax.vmap` (or
`stylize_batch`, which does). Each exported name means one thing, whatever was imported before:
no submodule shares a name with a function.
"""

import importlib

__version__ = "0.1.0"

# Names are loaded on first use (PEP 562), so that ``import jaxstyle`` and ``jaxstyle --help``
# do not start JAX; ``from jaxstyle import stylize`` works as usual.
_WHERE = {
    "CAFFE": "jaxstyle.preprocessing",
    "CompactLBFGS": "jaxstyle.lbfgs",
    "Continuation": "jaxstyle.optimize",
    "GRAM": "jaxstyle.style_losses",
    "ImageError": "jaxstyle.errors",
    "JaxstyleError": "jaxstyle.errors",
    "LAYERS": "jaxstyle.vgg_layers",
    "Loss": "jaxstyle.steps",
    "LossConfig": "jaxstyle.losses",
    "LossWeights": "jaxstyle.losses",
    "MEAN_COVARIANCE": "jaxstyle.style_losses",
    "ObjectiveOptions": "jaxstyle.option_groups",
    "OptimizationOptions": "jaxstyle.option_groups",
    "OptimizationError": "jaxstyle.errors",
    "OptimizerConfig": "jaxstyle.steps",
    "OptionsError": "jaxstyle.option_fields",
    "OutOfMemoryError": "jaxstyle.errors",
    "PerformanceOptions": "jaxstyle.option_groups",
    "PlanOptions": "jaxstyle.option_groups",
    "Preprocessing": "jaxstyle.preprocessing",
    "Problem": "jaxstyle.problem",
    "Quality": "jaxstyle.quality",
    "RunDivergedError": "jaxstyle.errors",
    "Stage": "jaxstyle.stages",
    "StopRule": "jaxstyle.optimize",
    "StyleLoss": "jaxstyle.style_losses",
    "StyleOptions": "jaxstyle.options",
    "StylizeProgress": "jaxstyle.driver",
    "StylizeResult": "jaxstyle.driver",
    "TORCHVISION": "jaxstyle.preprocessing",
    "Targets": "jaxstyle.losses",
    "VGGWeights": "jaxstyle.vgg",
    "VideoOptions": "jaxstyle.option_groups",
    "WeightsError": "jaxstyle.errors",
    "content_mse": "jaxstyle.terms",
    "content_targets": "jaxstyle.targets",
    "convert": "jaxstyle.weights",
    "find_weights": "jaxstyle.weights",
    "gram_distance": "jaxstyle.style_losses",
    "gram_histogram": "jaxstyle.style_losses",
    "gram_statistics": "jaxstyle.style_losses",
    "init_params": "jaxstyle.vgg",
    "layer_names": "jaxstyle.vgg_layers",
    "load_image": "jaxstyle.images",
    "load_weights": "jaxstyle.weights",
    "measure": "jaxstyle.quality",
    "minimize": "jaxstyle.optimize",
    "network_params": "jaxstyle.problem",
    "objective": "jaxstyle.losses",
    "plan": "jaxstyle.stages",
    "prepare": "jaxstyle.problem",
    "random_weights": "jaxstyle.weights",
    "region_targets": "jaxstyle.targets",
    "resolve_weights": "jaxstyle.weights",
    "save_image": "jaxstyle.images",
    "self_similarity_loss": "jaxstyle.terms",
    "sliced_wasserstein": "jaxstyle.style_losses",
    "style_targets": "jaxstyle.targets",
    "stylize": "jaxstyle.driver",
    "stylize_batch": "jaxstyle.driver",
    "stylize_video": "jaxstyle.video",
    "sweep": "jaxstyle.sweeps",
    "temporal_loss": "jaxstyle.terms",
    "tv_loss": "jaxstyle.terms",
    "vgg_features": "jaxstyle.vgg",
}

SUBMODULES = ("ahead", "batch", "checkpoint", "checks", "choices", "color", "compilation_cache",
              "compiled", "download", "driver", "errors", "files", "flags", "frames", "images",
              "info", "inputs", "layouts", "lbfgs", "linesearch", "locks", "losses", "onnx_vgg",
              "optimize", "option_fields", "option_groups", "options", "outputs",
              "pickled_arrays", "pipeline", "preprocessing", "presets", "problem", "pth",
              "quality", "reports", "resampling", "run_state", "sources", "stage_run", "stages",
              "steps", "style_losses", "stylize_command", "sweeps", "targets", "temporal",
              "terminal", "terms", "tiling", "unpickler", "vgg", "vgg_formats", "vgg_layers",
              "video", "weights", "winograd")
"""Every module of the package, reachable as ``jaxstyle.<name>`` without importing it first."""

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if name in SUBMODULES:
        return importlib.import_module(f"jaxstyle.{name}")
    raise AttributeError(f"module 'jaxstyle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE, *SUBMODULES})
