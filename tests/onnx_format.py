"""Writes VGG conv stacks as ONNX graphs with the onnx package, for building test files.

The graphs look like the exporters' (tf2onnx's NHWC -> NCHW transpose in front, a classifier head
behind); `variant` adds what a non-VGG graph has, to test that it is refused.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VARIANTS = ("vgg", "residual", "batchnorm", "preprocess", "strided")


def save_vgg_onnx(params: dict, path, variant: str = "vgg") -> None:
    """Writes jaxstyle-layout `params` (HWIO kernels) as a VGG ONNX graph at `path`.

    Args:
      params: ``{"conv1_1": {"kernel": [3, 3, in, out], "bias": [out]}, ...}``.
      path: where to write.
      variant: "vgg", or one of `VARIANTS` that breaks the VGG pattern after conv1_1.
    """
    nodes, inits = [], []

    def constant(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
    current = "nchw"
    if variant == "preprocess":
        nodes.append(helper.make_node("Sub", [current, constant("mean", np.ones((1, 3, 1, 1)))],
                                      ["centred"]))
        current = "centred"
    names = sorted(params, key=lambda n: (int(n[4]), int(n[6])))
    for k, name in enumerate(names):
        block, first = name[4], name.endswith("_1")
        if first and block != "1":
            nodes.append(helper.make_node("MaxPool", [current], [f"pool{int(block) - 1}"],
                                          kernel_shape=[2, 2], strides=[2, 2]))
            current = f"pool{int(block) - 1}"
        kernel = np.transpose(np.asarray(params[name]["kernel"]), (3, 2, 0, 1))  # -> OIHW
        strides = [2, 2] if variant == "strided" and k == 1 else [1, 1]
        nodes.append(helper.make_node(
            "Conv", [current, constant(f"{name}/W", kernel), constant(f"{name}/B",
                                                                      params[name]["bias"])],
            [name], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=strides, name=name))
        current = name
        if variant == "batchnorm" and k == 0:
            c = kernel.shape[0]
            nodes.append(helper.make_node(
                "BatchNormalization", [current] + [constant(f"bn/{p}", np.ones(c) * (p != "b"))
                                                   for p in ("s", "b", "m", "v")], ["bn"]))
            current = "bn"
        nodes.append(helper.make_node("Relu", [current], [f"relu_{name}"]))
        if variant == "residual" and k == 1:
            nodes.append(helper.make_node("Add", [f"relu_{name}", f"relu_{names[0]}"], ["sum"]))
            current = "sum"
        else:
            current = f"relu_{name}"
    nodes.append(helper.make_node("MaxPool", [current], ["pool5"], kernel_shape=[2, 2],
                                  strides=[2, 2]))
    nodes.append(helper.make_node("Flatten", ["pool5"], ["flat"]))
    width = np.asarray(params[names[-1]]["kernel"]).shape[-1]
    nodes.append(helper.make_node("Gemm", ["flat", constant("head/W", np.ones((width, 4))),
                                           constant("head/B", np.zeros(4))], ["logits"]))
    graph = helper.make_graph(
        nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                     ["n", 32, 32, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
