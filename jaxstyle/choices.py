"""The names options can take, and the command line's fixed limits, written once.

Importable without JAX: ``jaxstyle --help`` is built from these and `jaxstyle.options` alone, so it
answers at once. The modules that implement each choice import its names from here.
"""

POOLINGS = ("max", "avg")
CONVOLUTIONS = ("direct", "winograd")
CONVOLUTION_OPTIONS = (*CONVOLUTIONS, "auto")
AUTO_WINOGRAD_SIZE = 384
"""--convolution auto's smallest output (longest side) for Winograd: below it, the ~20 s it adds
to compiling on a 2-core CPU outweighs what a fast run saves."""
PRECISIONS = ("float32", "bfloat16")
WEIGHT_NORMALIZATIONS = ("neural-style", "resolution")
STYLE_LOSSES = ("gram", "mean_cov", "sliced_wasserstein", "gram_histogram")
CONTENT_LOSSES = ("mse", "self_similarity")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
LINESEARCHES = ("none", "zoom", "backtracking", "hager-zhang")
ORIGINAL_COLORS = ("none", "luminance", "swap")
PREPROCESSINGS = ("torchvision", "caffe")
FLOWS = ("dis", "farneback", "deepflow")
PRESETS = ("neural-style", "fast")

SOURCE_ORDER = ("caffe", "torchvision", "keras", "vgg16-caffe", "vgg16-torchvision",
                "vgg16-keras-h5", "vgg16-keras")
"""Known weight sources, in the order converted files are looked for: every VGG19 before any
VGG16."""

DEFAULT_MAX_PIXELS = 100_000_000
"""Input images larger than this are refused (decompression bombs)."""

SWEEP_SIZE = 192
"""``jaxstyle sweep``'s longest side of each cell: a 3x3 grid then takes minutes on a CPU."""

SWEEP_ITERATIONS = 100
"""``jaxstyle sweep``'s iterations per cell: enough for the look of a setting to show."""
