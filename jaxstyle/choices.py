"""The names options can take, and the command line's fixed limits, written once.

Importable without JAX: the command line's help is built from these and `jaxstyle.options`
alone, so it answers at once. The modules that implement each choice import its names from here.
"""

POOLINGS = ("max", "avg")
CONVOLUTIONS = ("direct", "winograd")
CONVOLUTION_OPTIONS = (*CONVOLUTIONS, "auto")
AUTO_WINOGRAD_SIZE = 384
"""``convolution="auto"``'s smallest output (longest side) for Winograd: below it, the ~20 s it adds
to compiling on a 2-core CPU outweighs what a fast run saves."""
PRECISIONS = ("float32", "bfloat16")
WEIGHT_NORMALIZATIONS = ("neural-style", "resolution", "relative")
STYLE_LOSSES = ("gram", "mean_cov", "sliced_wasserstein", "gram_histogram")
CONTENT_LOSSES = ("mse", "self_similarity")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
PARAMETRIZATIONS = ("pixels", "pyramid")
LINESEARCHES = ("none", "zoom", "backtracking", "hager-zhang")
ORIGINAL_COLORS = ("none", "luminance", "swap", "oklab")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
"""The video files `jaxstyle video` reads and writes (PyAV); any other output is a folder."""
PREPROCESSINGS = ("torchvision", "caffe")
FLOWS = ("dis", "farneback", "deepflow")
PRESETS = ("balanced", "neural-style", "fast", "neural-neighbour")
NEURAL_NEIGHBOUR = "neural-neighbour"
"""The preset whose objective matches neural neighbours (`jaxstyle.neighbours`) instead of style
statistics."""

SOURCE_ORDER = ("caffe", "torchvision", "keras", "vgg16-caffe", "vgg16-keras-h5", "vgg16-keras",
                "vgg16-torchvision", "vgg16-torchvision-pth")
"""Known weight sources, in the order converted files are looked for: every VGG19 before any
VGG16, and among the VGG16s the Oxford (Caffe-trained) weights before torchvision's own training,
so that a torchvision VGG16 downloaded beside ``vgg16-keras`` (what the defaults were tuned on)
does not change which weights a run that names none uses."""

AUTO_CHECKPOINT_SECONDS = 120.0
"""A run that checkpoints automatically (`jaxstyle.stylize_command`) writes a checkpoint after
this much running since the last one."""

NETWORK_TIMEOUT = 10.0
"""Seconds a download waits on the network before giving up."""

COORDINATOR_TIMEOUT = 60
"""Seconds a multi-host batch waits for the other processes to join (`jax.distributed`)."""

MAX_SIDE = 32768
"""The largest output side, scale or tile (pixels): beyond it sizes overflow XLA's indices."""

MAX_ITERATIONS = 10_000_000
"""The most iterations of anything (the loop counters are 32-bit)."""

MAX_SEED = 2**32 - 1
"""Seeds are 32-bit (`jax.random.key`)."""

MAX_STYLE_SCALE = 8.0
"""The largest style scale: style images at most 8 times the output's side."""

MAX_WEIGHT = 1e12
"""The largest weight, strength or step: larger ones overflow float32 losses to infinity."""

RESUMABLE_OPTIONS = ("learning_rate", "lbfgs_linesearch")
"""Options a resumed run may change: the step, so that a run whose loss became NaN can go on
with a smaller or searched one (the optimizer state does not depend on them)."""

DEFAULT_MAX_PIXELS = 100_000_000
"""Input images larger than this are refused (decompression bombs)."""

MAX_PIXELS_LIMIT = MAX_SIDE * MAX_SIDE
"""The most pixels a command may be told to accept in one input image: `MAX_SIDE` squared."""

SWEEP_SIZE = 192
"""``jaxstyle sweep``'s longest side of each cell: a 3x3 grid then takes minutes on a CPU."""

SWEEP_ITERATIONS = 100
"""``jaxstyle sweep``'s iterations per cell: enough for the look of a setting to show."""
