"""VGG19 weights: converting published files, the converted format, and finding weights to use.

Every supported source (torchvision, neural-style-pt's Caffe conversion, Gatys' normalised VGG19,
Keras' ``notop`` file) is converted to one flax-native msgpack file holding the conv parameters in
the layout `jaxstyle.vgg19_features` takes, plus the source's name, the SHA-256 of the source file
and the preprocessing the weights were trained with.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
import platformdirs
from flax import serialization

from jaxstyle.errors import WeightsError
from jaxstyle.files import atomic_write, read_tagged_msgpack, sha256_of
from jaxstyle.preprocessing import CAFFE, PRESETS, TORCHVISION, Preprocessing
from jaxstyle.pth import read_state_dict
from jaxstyle.vgg import CONV_LAYERS, init_params

FORMAT_NAME = "jaxstyle-vgg19"
FORMAT_VERSION = 1
CONVERTED_SUFFIX = ".msgpack"

# torchvision's `features` indices of the 16 convolutions (ReLUs and poolings sit in between).
_TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


@dataclass(frozen=True)
class Source:
    """A published VGG19 weights file that jaxstyle knows.

    Attributes:
      name: short name used on the command line.
      filename: the published file name.
      url: where it is published.
      sha256_prefix: the hash prefix its file name carries (torchvision's convention).
      sha256: the full SHA-256 where it is known, else "".
      preprocessing: what the weights were trained with.
      licence: the licence it is published under.
    """

    name: str
    filename: str
    url: str
    sha256_prefix: str
    sha256: str
    preprocessing: Preprocessing
    licence: str

    @property
    def converted_filename(self) -> str:
        return f"vgg19-{self.name}{CONVERTED_SUFFIX}"


SOURCES: dict[str, Source] = {
    "caffe": Source(
        name="caffe",
        filename="vgg19-d01eb7cb.pth",
        url="https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth",
        sha256_prefix="d01eb7cb",
        sha256="",
        preprocessing=CAFFE,
        licence="CC BY 4.0 (VGG team, Oxford); PyTorch conversion by jcjohnson / neural-style-pt",
    ),
    "torchvision": Source(
        name="torchvision",
        filename="vgg19-dcbb9e9d.pth",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        sha256_prefix="dcbb9e9d",
        sha256="",
        preprocessing=TORCHVISION,
        licence="BSD-3-Clause (torchvision); trained on ImageNet",
    ),
}

DEFAULT_SOURCE_ORDER = ("caffe", "torchvision")


@dataclass(frozen=True)
class VGGWeights:
    """Converted VGG19 conv parameters together with where they came from.

    Attributes:
      params: ``{"conv1_1": {"kernel": float32 [3, 3, in, out], "bias": float32 [out]}, ...}``.
      preprocessing: how images are mapped into the network's input space.
      source: a human-readable name of the source ("caffe", "torchvision", "random (seed 0)", ...).
      source_sha256: SHA-256 of the source file, "" for random weights.
    """

    params: dict
    preprocessing: Preprocessing
    source: str
    source_sha256: str = ""

    @property
    def is_random(self) -> bool:
        return self.source.startswith("random")

    def num_parameters(self) -> int:
        return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(self.params))


def random_weights(seed: int = 0) -> VGGWeights:
    """A seeded, He-initialised full-width VGG19 with torchvision preprocessing (no download)."""
    params = init_params(jax.random.key(seed))
    return VGGWeights(params, TORCHVISION, source=f"random (He init, seed {seed})")


def known_source(sha256: str) -> Source | None:
    """The published source whose checksum (or published checksum prefix) matches `sha256`."""
    for source in SOURCES.values():
        if (source.sha256 and source.sha256 == sha256) or sha256.startswith(source.sha256_prefix):
            return source
    return None


def _check_and_pack(kernels: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Validates HWIO kernels and biases against VGG19's layout; returns float32 params."""
    params = {}
    in_channels = 3
    for name in CONV_LAYERS:
        if name not in kernels:
            raise WeightsError(f"layer {name} is missing (not a VGG19 file, or truncated?)")
        kernel, bias = kernels[name]
        if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, in_channels):
            raise WeightsError(
                f"layer {name}: kernel has shape {kernel.shape} (as HWIO), expected "
                f"(3, 3, {in_channels}, out)"
            )
        out_channels = kernel.shape[3]
        if bias.shape != (out_channels,):
            raise WeightsError(f"layer {name}: bias has shape {bias.shape}, expected ({out_channels},)")
        block_first = f"conv{name[4]}_1"
        if name != block_first and out_channels != params[block_first]["kernel"].shape[3]:
            raise WeightsError(f"layer {name}: {out_channels} channels differ from {block_first}'s")
        kernel32 = np.asarray(kernel, np.float32)
        bias32 = np.asarray(bias, np.float32)
        if not (np.isfinite(kernel32).all() and np.isfinite(bias32).all()):
            raise WeightsError(f"layer {name}: weights contain NaN or infinity")
        params[name] = {"kernel": kernel32, "bias": bias32}
        in_channels = out_channels
    return params


def params_from_state_dict(state: dict[str, np.ndarray]) -> dict:
    """Converts a torch-layout VGG19 state dict to conv params; the classifier is dropped.

    Accepts torchvision's keys (``features.N.weight``, also under a ``module.`` prefix) and Gatys'
    (``conv1_1.weight``). Torch kernels [out, in, kh, kw] become HWIO [kh, kw, in, out].

    Raises:
      WeightsError: a conv layer is missing or has the wrong shape (the message names it).
    """
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    names = {}
    if any(k.startswith("features.") for k in state):
        names = {n: f"features.{i}" for n, i in zip(CONV_LAYERS, _TORCHVISION_CONV_INDEX)}
    elif any(k.startswith("conv1_1.") for k in state):
        names = {n: n for n in CONV_LAYERS}
    else:
        raise WeightsError("no VGG19 conv layers found (expected keys features.N.* or conv1_1.*)")
    kernels = {}
    for name, key in names.items():
        if f"{key}.weight" in state and f"{key}.bias" in state:
            weight = state[f"{key}.weight"]
            if weight.ndim != 4:
                raise WeightsError(f"layer {name} ({key}.weight): shape {weight.shape} is not 4-D")
            kernels[name] = (np.transpose(weight, (2, 3, 1, 0)), state[f"{key}.bias"])
    return _check_and_pack(kernels)


def params_from_keras_h5(path: str | os.PathLike) -> dict:
    """Reads Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (needs h5py)."""
    try:
        import h5py
    except ImportError:
        raise WeightsError(
            "reading Keras .h5 weights needs h5py: pip install 'jaxstyle[keras]'"
        ) from None
    kernels = {}
    try:
        with h5py.File(path, "r") as f:
            for name in CONV_LAYERS:
                group = f.get(f"block{name[4]}_conv{name[6]}")
                if group is None:
                    continue
                arrays = []
                group.visititems(
                    lambda _, obj: arrays.append(obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
                kernel = [a for a in arrays if a.ndim == 4]
                bias = [a for a in arrays if a.ndim == 1]
                if len(kernel) == 1 and len(bias) == 1:
                    kernels[name] = (kernel[0], bias[0])
    except OSError as exc:
        raise WeightsError(f"cannot read HDF5 file: {exc}") from None
    return _check_and_pack(kernels)


def _is_hdf5(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _is_converted(path: str) -> bool:
    if zipfile.is_zipfile(path) or _is_hdf5(path):
        return False
    with open(path, "rb") as f:
        head = f.read(64)
    return FORMAT_NAME.encode() in head


def convert(path: str | os.PathLike, preprocessing: str | Preprocessing | None = None) -> VGGWeights:
    """Converts a supported source file to `VGGWeights` in memory.

    Args:
      path: a torchvision-layout or Gatys-layout ``.pth`` (zip or legacy, float32 or float16,
        with or without classifier) or a Keras ``.h5``.
      preprocessing: "torchvision", "caffe" or a `Preprocessing`. Needed only for a file jaxstyle
        does not recognise by checksum; for a recognised one it must agree with the known value.

    Raises:
      WeightsError: unreadable or unsafe file, wrong layout, or unknown preprocessing.
    """
    path = os.fspath(path)
    try:
        return _convert(path, preprocessing)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None


def _convert(path: str, preprocessing: str | Preprocessing | None) -> VGGWeights:
    if isinstance(preprocessing, str):
        if preprocessing not in PRESETS:
            raise WeightsError(f"preprocessing: expected one of {sorted(PRESETS)}, got {preprocessing!r}")
        preprocessing = PRESETS[preprocessing]
    checksum = sha256_of(path)
    source = known_source(checksum)
    if _is_hdf5(path):
        params = params_from_keras_h5(path)
        name, implied = "keras", CAFFE  # keras.applications' VGG19 is Caffe-trained, "caffe" mode
    else:
        params = params_from_state_dict(read_state_dict(path))
        name, implied = (source.name, source.preprocessing) if source else (Path(path).name, None)
    if implied is not None and preprocessing is not None and preprocessing != implied:
        raise WeightsError(
            f"this file is known to use {_preset_name(implied)} preprocessing, "
            f"not {_preset_name(preprocessing)}"
        )
    preprocessing = preprocessing or implied
    if preprocessing is None:
        raise WeightsError(
            "not a file jaxstyle recognises by checksum: state its preprocessing with "
            "--preprocessing torchvision|caffe"
        )
    return VGGWeights(params, preprocessing, source=name, source_sha256=checksum)


def _preset_name(p: Preprocessing) -> str:
    return next((k for k, v in PRESETS.items() if v == p), repr(p))


def to_bytes(weights: VGGWeights) -> bytes:
    """Serialises converted weights and their metadata with flax's msgpack."""
    return serialization.msgpack_serialize(
        {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "source": weights.source,
            "source_sha256": weights.source_sha256,
            "preprocessing": weights.preprocessing.to_dict(),
            "params": jax.tree_util.tree_map(np.asarray, weights.params),
        }
    )


def save_converted(weights: VGGWeights, path: str | os.PathLike) -> Path:
    """Writes converted weights atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_bytes(weights)
    with atomic_write(path) as f:
        f.write(data)
    return path


def _load_converted(path: str) -> VGGWeights:
    state = read_tagged_msgpack(path, FORMAT_NAME, FORMAT_VERSION, WeightsError,
                                "converted weights", "convert the source file again")
    raw = state["params"]
    params = _check_and_pack(
        {n: (raw[n]["kernel"], raw[n]["bias"]) for n in CONV_LAYERS if n in raw}
    )
    return VGGWeights(
        params,
        Preprocessing.from_dict(state["preprocessing"]),
        source=str(state["source"]),
        source_sha256=str(state["source_sha256"]),
    )


def load_weights(
    path: str | os.PathLike, preprocessing: str | Preprocessing | None = None
) -> VGGWeights:
    """Loads converted weights, or converts a supported source file on the fly.

    Args:
      path: a converted ``.msgpack`` file or any file `convert` accepts.
      preprocessing: only for source files jaxstyle does not recognise (see `convert`).

    Returns:
      `VGGWeights`; ``weights.params`` goes straight into `jaxstyle.vgg19_features`.

    Raises:
      WeightsError: missing, unreadable, unsafe or malformed file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    if _is_converted(path):
        return _load_converted(path)
    return convert(path, preprocessing)


def repo_weights_dir() -> Path | None:
    """The checkout's ``weights/`` folder, or None when jaxstyle runs from an installed wheel."""
    candidate = Path(__file__).resolve().parent.parent / "weights"
    return candidate if (candidate / "README.md").is_file() else None


def cache_weights_dir() -> Path:
    """The per-user cache folder for weights (``~/.cache/jaxstyle/weights`` on Linux)."""
    return Path(platformdirs.user_cache_dir("jaxstyle")) / "weights"


def default_weights_dir() -> Path:
    """Where converted weights are written by default: the checkout's weights/, else the cache."""
    return repo_weights_dir() or cache_weights_dir()


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    """Resolves which weights file to use.

    Order: `explicit`, the ``JAXSTYLE_WEIGHTS`` environment variable, converted files in the
    checkout's ``weights/`` folder, then in the user cache (caffe before torchvision).

    Raises:
      WeightsError: nothing found; the message says how to get weights.
    """
    for candidate in (explicit, os.environ.get("JAXSTYLE_WEIGHTS")):
        if candidate:
            if not os.path.isfile(candidate):
                raise WeightsError(f"weights file not found: {candidate}")
            return Path(candidate)
    for folder in (repo_weights_dir(), cache_weights_dir()):
        if folder is None:
            continue
        for name in DEFAULT_SOURCE_ORDER:
            path = folder / SOURCES[name].converted_filename
            if path.is_file():
                return path
    raise WeightsError(
        "no VGG19 weights found: run 'jaxstyle weights download', convert a file you have with "
        "'jaxstyle weights convert FILE', or pass --weights random to try the tool without them"
    )

