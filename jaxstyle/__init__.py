"""jaxstyle: neural style transfer (Gatys et al. 2015) on JAX.

The public API: `vgg_features` (the network; `vgg19_features` is its older name), `gram_matrix` and the other losses, `load_weights`
and `random_weights`, `StyleOptions` and `stylize`.
"""

import importlib

# Names are loaded on first use (PEP 562), so that ``import jaxstyle`` and ``jaxstyle --help``
# do not start JAX; ``from jaxstyle import stylize`` works as usual.
_WHERE = {
    "CAFFE": "jaxstyle.preprocessing",
    "ImageError": "jaxstyle.errors",
    "JaxstyleError": "jaxstyle.errors",
    "LAYERS": "jaxstyle.vgg",
    "LossConfig": "jaxstyle.losses",
    "OptimizationError": "jaxstyle.errors",
    "OptionsError": "jaxstyle.options",
    "Preprocessing": "jaxstyle.preprocessing",
    "Stage": "jaxstyle.plan",
    "StyleOptions": "jaxstyle.options",
    "StylizeProgress": "jaxstyle.stylize",
    "StylizeResult": "jaxstyle.stylize",
    "TORCHVISION": "jaxstyle.preprocessing",
    "Targets": "jaxstyle.losses",
    "VGGWeights": "jaxstyle.weights",
    "WeightsError": "jaxstyle.errors",
    "content_loss": "jaxstyle.losses",
    "content_targets": "jaxstyle.losses",
    "convert": "jaxstyle.weights",
    "gram_matrix": "jaxstyle.losses",
    "init_params": "jaxstyle.vgg",
    "layer_names": "jaxstyle.vgg",
    "load_image": "jaxstyle.images",
    "load_weights": "jaxstyle.weights",
    "objective": "jaxstyle.losses",
    "plan": "jaxstyle.plan",
    "random_weights": "jaxstyle.weights",
    "save_image": "jaxstyle.images",
    "style_loss": "jaxstyle.losses",
    "style_targets": "jaxstyle.losses",
    "stylize": "jaxstyle.stylize",
    "stylize_batch": "jaxstyle.stylize",
    "tv_loss": "jaxstyle.losses",
    "vgg19_features": "jaxstyle.vgg",
    "vgg_features": "jaxstyle.vgg",
}


_SUBMODULES = ("batch", "checkpoint", "choices", "color", "download", "errors", "files", "images",
               "losses", "onnx_vgg", "optimize", "options", "plan", "preprocessing", "pth",
               "quality", "session", "style_losses", "stylize", "sweep", "tiling", "vgg",
               "weights", "winograd")


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxstyle.{name}")
    raise AttributeError(f"module 'jaxstyle' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__version__ = "0.1.0"

__all__ = [
    "Stage",
    "Targets",
    "plan",
    "stylize_batch",
    "CAFFE",
    "LAYERS",
    "TORCHVISION",
    "ImageError",
    "JaxstyleError",
    "LossConfig",
    "OptimizationError",
    "OptionsError",
    "Preprocessing",
    "StyleOptions",
    "StylizeProgress",
    "StylizeResult",
    "VGGWeights",
    "WeightsError",
    "content_loss",
    "content_targets",
    "convert",
    "gram_matrix",
    "init_params",
    "layer_names",
    "load_image",
    "load_weights",
    "objective",
    "random_weights",
    "save_image",
    "style_loss",
    "style_targets",
    "stylize",
    "tv_loss",
    "vgg19_features",
    "vgg_features",
]
