"""jaxstyle: neural style transfer (Gatys et al. 2015) on JAX.

The public API: `vgg_features` (the network; `vgg19_features` is its older name), `gram_matrix` and the other losses, `load_weights`
and `random_weights`, `StyleOptions` and `stylize`.
"""

from jaxstyle.errors import ImageError, JaxstyleError, OptimizationError, WeightsError
from jaxstyle.images import load_image, save_image
from jaxstyle.losses import (
    LossConfig,
    content_loss,
    content_targets,
    gram_matrix,
    objective,
    style_loss,
    style_targets,
    tv_loss,
)
from jaxstyle.options import OptionsError, StyleOptions
from jaxstyle.preprocessing import CAFFE, TORCHVISION, Preprocessing
from jaxstyle.stylize import StylizeProgress, StylizeResult, stylize
from jaxstyle.vgg import LAYERS, init_params, layer_names, vgg19_features, vgg_features
from jaxstyle.weights import VGGWeights, convert, load_weights, random_weights

__version__ = "0.1.0"

__all__ = [
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
