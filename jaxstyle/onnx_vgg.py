"""Reading the weights of a VGG conv stack out of an ONNX graph, without executing anything.

The graph is parsed with the ``onnx`` package (an optional extra: ``pip install 'jaxstyle[onnx]'``)
and walked node by node: 3x3 convolutions each followed by a ReLU, separated by 2x2 stride-2
poolings into blocks, form the stack; whatever the graph does after its last pooling (a
classifier head) is ignored. Anything else inside the stack (a residual addition, batch
normalisation, a strided convolution, arithmetic on the input) makes the graph no VGG, and is
refused with a message that names the node. No operator is run: the ONNX runtime is never used.
Nothing the file states is trusted: a node without the inputs or outputs its operator needs, an
attribute of the wrong type, or a weight that is not floating point or whose data does not match
its dims is refused by name (never an IndexError or a reshape's guess at a negative dimension).
"""

from __future__ import annotations

import os

import numpy as np

from jaxstyle.errors import WeightsError

# Operators that may stand between the graph's input and its first convolution without changing
# values: exporters insert layout transposes (tf2onnx: NHWC -> NCHW) and casts.
_LAYOUT_OPS = ("Transpose", "Identity", "Cast")
_POOLS = ("MaxPool", "AveragePool")
_BLOCKS = 5
# TensorProto.DataType values of the weights read: FLOAT, FLOAT16, DOUBLE, BFLOAT16.
_FLOAT_TYPES = (1, 10, 11, 16)


def _load(path: str):
    try:
        import onnx
    except ImportError:
        raise WeightsError("reading ONNX files needs the onnx package: pip install "
                           "'jaxstyle[onnx]'") from None
    try:
        # External data would be read from paths the file names: never followed.
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises several types on input that is not a model
        raise WeightsError(f"not an ONNX model ({type(exc).__name__})") from None


def _constants(graph) -> dict[str, object]:
    """Every initializer and Constant node output of the graph, as TensorProtos, by name."""
    from onnx import AttributeProto

    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value" and attribute.type == AttributeProto.TENSOR:
                    tensors[node.output[0]] = attribute.t
    return tensors


def _array(tensors: dict, name: str, what: str) -> np.ndarray:
    from onnx import TensorProto, numpy_helper

    if name not in tensors:
        raise WeightsError(f"{what} is computed in the graph, not stored: not a VGG conv stack")
    tensor = tensors[name]
    if tensor.data_location == TensorProto.EXTERNAL:
        raise WeightsError(f"{what} is stored outside the file (ONNX external data), which "
                           "jaxstyle does not read")
    if tensor.data_type not in _FLOAT_TYPES:
        kind = (TensorProto.DataType.Name(tensor.data_type)
                if tensor.data_type in TensorProto.DataType.values() else tensor.data_type)
        raise WeightsError(f"{what} is stored as {kind}, not floating point (quantised networks "
                           "are not supported)")
    dims = tuple(tensor.dims)
    if min(dims, default=0) < 0:
        raise WeightsError(f"{what} has dims {dims}, one of them negative")
    try:
        return numpy_helper.to_array(tensor)
    except ValueError:  # the data's length does not match the dims
        raise WeightsError(f"{what}: its data does not fit its dims {dims}") from None


def _op(node) -> str:
    """The node's operator for messages: as is where it is a name, else quoted (a file's
    operator could hold a newline, or bytes that are not UTF-8, which protobuf returns as bytes)."""
    op = node.op_type
    return op if isinstance(op, str) and op.isidentifier() else repr(op)


def _attribute(node, name: str, default):
    """The value of `node`'s attribute `name` (a list for ints, bytes for a string), or
    `default` where the node has none."""
    from onnx import AttributeProto

    values = {AttributeProto.INTS: lambda a: list(a.ints), AttributeProto.INT: lambda a: a.i,
              AttributeProto.STRING: lambda a: a.s}
    for attribute in node.attribute:
        if attribute.name == name:
            if attribute.type not in values:
                raise WeightsError(f"{_op(node)} {node.name!r}: attribute {name!r} is not an "
                                   "integer, a list of integers or a string")
            return values[attribute.type](attribute)
    return default


def _check_conv(node, name: str) -> None:
    padded = (_attribute(node, "pads", [0, 0, 0, 0]) == [1, 1, 1, 1]
              or _attribute(node, "auto_pad", b"") in (b"SAME_UPPER", b"SAME_LOWER"))
    plain = (_attribute(node, "strides", [1, 1]) == [1, 1]
             and _attribute(node, "dilations", [1, 1]) == [1, 1]
             and _attribute(node, "group", 1) == 1)
    if not (padded and plain):
        raise WeightsError(f"convolution {node.name!r} ({name}) is not a 3x3 stride-1 "
                           "convolution with padding 1: not a VGG conv stack")


def _check_pool(node) -> None:
    if (_attribute(node, "kernel_shape", []) != [2, 2]
            or _attribute(node, "strides", [1, 1]) != [2, 2]):
        raise WeightsError(f"pooling {node.name!r} is not 2x2 with stride 2: not a VGG conv stack")


def read_conv_stack(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The convolutions of an ONNX VGG, named by block and position.

    Args:
      path: an ONNX file whose graph begins with a VGG conv stack (the ONNX model zoo's VGG16 and
        VGG19, Keras' VGG16 exported with tf2onnx, torchvision's exported with torch.onnx).

    Returns:
      ``{"conv1_1": (kernel float [3, 3, in, out], bias float [out]), ...}``; which layers are
      present says which VGG it is.

    Raises:
      WeightsError: the file is not an ONNX model, or its graph is not a VGG conv stack (the
        message names the first node that breaks the pattern).
    """
    graph = _load(os.fspath(path)).graph
    tensors = _constants(graph)
    kernels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    block, index = 1, 0
    current = None  # the output of the stack so far
    stack = set()  # every tensor the stack has produced
    after_conv = False
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        role = _role(node, current, stack, block)
        if role == "skip":
            continue
        if role == "end":
            break  # the classifier head, if any: not part of the features
        if not node.output:
            raise WeightsError(f"{_op(node)} ({node.name!r}) has no output: not an ONNX model")
        if node.op_type == "Conv":
            if len(node.input) < 2:
                raise WeightsError(f"convolution {node.name!r} has no kernel input")
            if after_conv:
                raise WeightsError(f"convolution {node.name!r} follows a convolution without a "
                                   "ReLU: not a VGG conv stack")
            index += 1
            name = f"conv{block}_{index}"
            kernels[name] = _conv_weights(node, name, tensors)
            after_conv = True
        elif node.op_type == "Relu" and after_conv:
            after_conv = False
        elif node.op_type in _POOLS and not after_conv and index:
            _check_pool(node)
            block, index = block + 1, 0
        elif node.op_type == "BatchNormalization":
            raise WeightsError("a batch-normalised VGG (vgg16_bn, vgg19_bn) is not supported: "
                               "use the plain network's weights")
        elif block > 1 and index == 0:
            break  # the stack ended after a pooling; what follows is not features
        else:
            raise WeightsError(f"{_op(node)} ({node.name!r}) inside the convolution stack: "
                               "not a VGG conv stack")
        current = node.output[0]
        stack.add(current)
    if not kernels:
        raise WeightsError("the graph has no convolutions")
    return kernels


def _role(node, current: str | None, stack: set, block: int) -> str:
    """What `node` is to the conv stack read so far (`current`: the stack's output, None before
    its first convolution; `stack`: every tensor it produced): "skip" (a layout operation on
    the input, or off the stack's path), "end" (past the last block) or "layer".

    Raises:
      WeightsError: the node computes on the input before the first convolution, or takes an
        earlier layer's output (the graph branches).
    """
    if current is None:
        if node.op_type in _LAYOUT_OPS:
            return "skip"
        if node.op_type != "Conv":
            raise WeightsError(f"the graph computes {_op(node)} ({node.name!r}) on its "
                               "input before the first convolution: not a plain VGG conv "
                               "stack (preprocessing inside the graph would be ignored)")
        return "layer"
    uses = [name for name in node.input if name in stack]
    if not uses:
        return "skip"
    if block > _BLOCKS:
        return "end"
    if uses != [current]:
        raise WeightsError(f"{_op(node)} ({node.name!r}) takes an earlier layer's "
                           "output: the graph branches, not a VGG conv stack")
    return "layer"


def _conv_weights(node, name: str, tensors: dict) -> tuple[np.ndarray, np.ndarray]:
    """Convolution `node`'s (layer `name`'s) kernel as HWIO [3, 3, in, out] and its bias [out]
    (zeros when it has none), once its attributes and kernel shape are a VGG's."""
    _check_conv(node, name)
    kernel = _array(tensors, node.input[1], f"the kernel of {node.name!r}")
    if kernel.ndim != 4 or kernel.shape[2:] != (3, 3):
        raise WeightsError(f"convolution {node.name!r} ({name}) has a kernel of shape "
                           f"{kernel.shape}, not [out, in, 3, 3]: not a VGG conv stack")
    bias = (_array(tensors, node.input[2], f"the bias of {node.name!r}")
            if len(node.input) > 2 and node.input[2] else np.zeros(kernel.shape[0]))
    return np.transpose(kernel, (2, 3, 1, 0)), bias
