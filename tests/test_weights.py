import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DATA, nhwc
from torch_format import crafted, save_legacy, save_zip, save_zip_bomb, save_zip_raw_pickle
from weights_fuzzer import run_child

from jaxstyle import LAYERS, WeightsError, layer_names, load_weights, vgg_features
from jaxstyle.cli import main
from jaxstyle.preprocessing import CAFFE, TORCHVISION
from jaxstyle.pth import read_state_dict
from jaxstyle.vgg_layers import ARCHITECTURES, CONV_LAYERS, conv_layer_names
from jaxstyle.weights import convert, find_weights, save_converted

TORCHVISION_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


@pytest.fixture(scope="module")
def state():
    return read_state_dict(DATA / "vgg19_tiny.pth")


def _gatys_layout(state):
    """Same tensors under Gatys' vgg_conv.pth keys (conv1_1.weight ...), no classifier."""
    out = {}
    for name, index in zip(CONV_LAYERS, TORCHVISION_INDEX):
        out[f"{name}.weight"] = state[f"features.{index}.weight"]
        out[f"{name}.bias"] = state[f"features.{index}.bias"]
    return out


def _assert_matches_reference(weights, reference, rtol=1e-4):
    x = jnp.asarray(nhwc(reference["input_nchw"]))[0]
    for pooling in ("max", "avg"):
        out = vgg_features(weights.params, x, LAYERS, pooling)
        for name in LAYERS:
            want = nhwc(reference[f"{pooling}/{name}"])[0]
            rel = np.abs(np.asarray(out[name]) - want).max() / np.abs(want).max()
            assert rel < rtol, (pooling, name, rel)


def _make(kind, state, path):
    features_only = {k: v for k, v in state.items() if k.startswith("features.")}
    builders = {
        "shared zip": lambda: DATA / "vgg19_tiny.pth",
        "shared legacy": lambda: DATA / "vgg19_tiny_legacy.pth",
        "zip without classifier": lambda: save_zip(features_only, path) or path,
        "legacy without classifier": lambda: save_legacy(features_only, path) or path,
        "gatys zip": lambda: save_zip(_gatys_layout(state), path) or path,
        "gatys legacy": lambda: save_legacy(_gatys_layout(state), path) or path,
        "module prefix": lambda: save_zip({f"module.{k}": v for k, v in state.items()}, path)
        or path,
    }
    return builders[kind]()


@pytest.mark.parametrize("kind", ["shared zip", "shared legacy", "zip without classifier",
                                  "legacy without classifier", "gatys zip", "gatys legacy",
                                  "module prefix"])
def test_each_layout_converts_round_trips_and_matches_torch(kind, state, reference, tmp_path):
    source = _make(kind, state, tmp_path / "renamed-anything.bin")
    weights = convert(source, "torchvision")
    _assert_matches_reference(weights, reference)
    saved = save_converted(weights, tmp_path / "out.msgpack")
    again = load_weights(saved)
    assert again.source_sha256 == weights.source_sha256 and again.preprocessing == TORCHVISION
    for name in CONV_LAYERS:
        np.testing.assert_array_equal(again.params[name]["kernel"], weights.params[name]["kernel"])


def test_float16_file(reference):
    weights = convert(DATA / "vgg19_tiny_fp16.pth", "torchvision")
    assert weights.params["conv1_1"]["kernel"].dtype == np.float32
    # The file's weights are rounded to float16 (relative step 2^-11), so activations can only
    # match the float32 reference to about that precision.
    _assert_matches_reference(weights, reference, rtol=5e-3)


def test_keras_h5(state, reference, tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:
        for name, index in zip(CONV_LAYERS, TORCHVISION_INDEX):
            group = f.create_group(f"block{name[4]}_conv{name[6]}")
            kernel = np.transpose(state[f"features.{index}.weight"], (2, 3, 1, 0))
            group.create_dataset(f"block{name[4]}_conv{name[6]}_W_1:0", data=kernel)
            group.create_dataset(f"block{name[4]}_conv{name[6]}_b_1:0",
                                 data=state[f"features.{index}.bias"])
    weights = convert(path)
    assert weights.preprocessing == CAFFE and weights.source == "keras"
    _assert_matches_reference(weights, reference)


def test_unknown_file_needs_preprocessing_and_known_ones_are_recognised(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="state its preprocessing"):
        convert(DATA / "vgg19_tiny.pth")
    from jaxstyle import sources
    from jaxstyle.files import sha256_of

    checksum = sha256_of(DATA / "vgg19_tiny.pth")
    fake = sources.Source("caffe", "vgg19", "x.pth", "http://x", checksum[:8], "", "", CAFFE,
                          "test")
    monkeypatch.setitem(sources.SOURCES, "caffe", fake)
    renamed = tmp_path / "my-weights.pth"
    renamed.write_bytes((DATA / "vgg19_tiny.pth").read_bytes())
    recognised = convert(renamed)
    assert recognised.source == "caffe" and recognised.preprocessing == CAFFE
    with pytest.raises(WeightsError, match="known to use caffe preprocessing"):
        convert(renamed, "torchvision")


def test_hostile_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import pickle

    path = tmp_path / "evil.pth"
    save_zip_raw_pickle(pickle.dumps({"features.0.weight": Exploit()}, protocol=2), path)
    with pytest.raises(WeightsError,
                       match=r"refusing to load: the file asks for '(posix|os)\.system'"):
        load_weights(path, "torchvision")
    assert not marker.exists()
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(WeightsError):
        load_weights(legacy, "torchvision")
    assert not marker.exists()


def test_wrong_shapes_missing_layers_and_truncation_name_the_problem(state, tmp_path):
    bad = dict(state)
    bad["features.7.weight"] = bad["features.7.weight"][:, :4]  # conv2_2 with 4 input channels
    save_zip(bad, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match="layer conv2_2: kernel has shape"):
        convert(tmp_path / "shape.pth", "torchvision")
    missing = {k: v for k, v in state.items() if not k.startswith("features.34.")}
    save_zip(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="layer conv5_4 is missing"):
        convert(tmp_path / "missing.pth", "torchvision")
    full = (DATA / "vgg19_tiny_legacy.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(full[: len(full) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        convert(tmp_path / "cut.pth", "torchvision")
    zipped = (DATA / "vgg19_tiny.pth").read_bytes()
    (tmp_path / "cut.zip.pth").write_bytes(zipped[: len(zipped) // 2])
    with pytest.raises(WeightsError):
        convert(tmp_path / "cut.zip.pth", "torchvision")


def test_converted_file_corruption_and_version(tiny_weights, tmp_path):
    path = save_converted(tiny_weights, tmp_path / "w.msgpack")
    data = path.read_bytes()
    (tmp_path / "cut.msgpack").write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match="corrupt or truncated converted weights"):
        load_weights(tmp_path / "cut.msgpack")
    from flax import serialization

    state = serialization.msgpack_restore(data)
    state["version"] = 99
    (tmp_path / "v99.msgpack").write_bytes(serialization.msgpack_serialize(state))
    with pytest.raises(WeightsError, match="format version 99"):
        load_weights(tmp_path / "v99.msgpack")


def test_resolution_order(tiny_weights, tmp_path, monkeypatch):
    from jaxstyle import sources

    repo, cache = tmp_path / "repo", tmp_path / "cache"
    repo.mkdir(), cache.mkdir()
    monkeypatch.setattr(sources, "repo_weights_dir", lambda: repo)
    monkeypatch.setattr(sources, "cache_weights_dir", lambda: cache)
    monkeypatch.delenv("JAXSTYLE_WEIGHTS", raising=False)
    with pytest.raises(WeightsError, match="--weights random"):
        find_weights()
    in_cache = save_converted(tiny_weights, cache / "vgg19-torchvision.msgpack")
    assert find_weights() == in_cache
    in_repo = save_converted(tiny_weights, repo / "vgg19-caffe.msgpack")
    assert find_weights() == in_repo
    env = save_converted(tiny_weights, tmp_path / "env.msgpack")
    monkeypatch.setenv("JAXSTYLE_WEIGHTS", str(env))
    assert find_weights() == env
    assert find_weights(str(in_cache)) == in_cache


def test_cli_convert_and_info(tmp_path, capsys):
    out = tmp_path / "tiny.msgpack"
    assert main(["weights", "convert", str(DATA / "vgg19_tiny_legacy.pth"), str(out),
                 "--preprocessing", "torchvision"]) == 0
    assert main(["weights", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preprocessing:  RGB, scale 1, mean [0.485, 0.456, 0.406]" in printed
    assert "parameters:     " in printed and "source sha256:  " in printed
    assert main(["weights", "convert", str(DATA / "vgg19_tiny.pth"),
                 str(tmp_path / "x.msgpack")]) == 2
    assert "state its preprocessing" in capsys.readouterr().err
    assert not (tmp_path / "x.msgpack").exists()


def test_files_that_are_no_weights_say_what_they_are(tmp_path, capsys):
    text, empty = tmp_path / "text.msgpack", tmp_path / "empty.pth"
    text.write_text("hello")
    empty.write_bytes(b"")
    converted = tmp_path / "tiny.msgpack"
    assert main(["weights", "convert", str(DATA / "vgg19_tiny_legacy.pth"), str(converted),
                 "--preprocessing", "torchvision"]) == 0
    capsys.readouterr()
    for argv, message in (
            (["info", text], "not a weights file jaxstyle reads: expected a converted .msgpack"),
            (["info", empty], "not a weights file jaxstyle reads: it is empty"),
            (["convert", converted, tmp_path / "again.msgpack"],
             "already in jaxstyle's converted format: use it as it is")):
        assert main(["weights", *map(str, argv)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "again.msgpack").exists()


@pytest.mark.torch
def test_full_size_file_written_by_real_torch(tmp_path):
    """A full-width VGG19 saved by real torch (legacy format, like torchvision's file)."""
    pytest.importorskip("torch")
    source = tmp_path / "vgg19-random.pth"
    script = (
        "import torch, torch.nn as nn\n"
        "torch.manual_seed(0)\n"
        "cfg=[64,64,'M',128,128,'M',256,256,256,256,'M',512,512,512,512,'M',512,512,512,512,'M']\n"
        "layers=[];c=3\n"
        "for v in cfg:\n"
        "    layers += [nn.MaxPool2d(2)] if v=='M' else [nn.Conv2d(c,v,3,padding=1), nn.ReLU()]\n"
        "    c = c if v=='M' else v\n"
        "m=nn.Module(); m.features=nn.Sequential(*layers)\n"
        f"torch.save(m.state_dict(), {str(source)!r}, _use_new_zipfile_serialization=False)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    weights = convert(source, "caffe")
    assert weights.num_parameters() == 20_024_384
    converted = save_converted(weights, tmp_path / "full.msgpack")
    start = time.perf_counter()
    loaded = load_weights(converted)
    assert time.perf_counter() - start < 10
    assert loaded.params["conv5_4"]["kernel"].shape == (3, 3, 512, 512)
    assert Path(converted).stat().st_size > 80_000_000


def _vgg16_layouts(tiny16_weights, tmp_path):
    """The tiny VGG16 in every source layout jaxstyle reads, each written without jaxstyle."""
    onnx_format = pytest.importorskip("onnx_format")
    h5py = pytest.importorskip("h5py")
    state = read_state_dict(DATA / "vgg16_tiny.pth")
    gatys = {}
    for name, index in zip(conv_layer_names(ARCHITECTURES["vgg16"]), VGG16_INDEX):
        gatys[f"{name}.weight"] = state[f"features.{index}.weight"]
        gatys[f"{name}.bias"] = state[f"features.{index}.bias"]
    save_legacy(state, tmp_path / "legacy.pth")
    save_zip(gatys, tmp_path / "gatys.pth")
    with h5py.File(tmp_path / "keras.h5", "w") as f:
        for name, p in tiny16_weights.params.items():
            group = f.create_group(f"block{name[4]}_conv{name[6]}")
            group.create_dataset(f"{name}_W_1:0", data=p["kernel"])
            group.create_dataset(f"{name}_b_1:0", data=p["bias"])
    onnx_format.save_vgg_onnx(tiny16_weights.params, tmp_path / "model.onnx")
    return {"torchvision zip": DATA / "vgg16_tiny.pth", "legacy": tmp_path / "legacy.pth",
            "gatys": tmp_path / "gatys.pth", "keras h5": tmp_path / "keras.h5",
            "onnx": tmp_path / "model.onnx"}


VGG16_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def test_vgg16_in_every_layout_converts_and_matches_torch(tiny16_weights, reference16, tmp_path):
    x = jnp.asarray(nhwc(reference16["input_nchw"]))[0]
    names = layer_names(ARCHITECTURES["vgg16"])
    for kind, path in _vgg16_layouts(tiny16_weights, tmp_path).items():
        weights = convert(path, None if kind == "keras h5" else "caffe")
        assert weights.network == "VGG16", kind
        again = load_weights(save_converted(weights, tmp_path / f"{kind}.msgpack"))
        assert again.network == "VGG16" and again.preprocessing == CAFFE
        out = vgg_features(again.params, x, names)
        for name in names:
            want = nhwc(reference16[f"max/{name}"])[0]
            rel = np.abs(np.asarray(out[name]) - want).max() / np.abs(want).max()
            assert rel < 1e-4, (kind, name, rel)


@pytest.mark.parametrize("variant, message", [
    ("residual", "takes an earlier layer's output: the graph branches"),
    ("batchnorm", "batch-normalised VGG"),
    ("preprocess", "computes Sub .* before the first convolution"),
    ("strided", "not a 3x3 stride-1 convolution"),
])
def test_onnx_graphs_that_are_not_a_vgg_stack_are_refused(tiny16_weights, tmp_path, variant,
                                                          message):
    onnx_format = pytest.importorskip("onnx_format")
    path = tmp_path / f"{variant}.onnx"
    onnx_format.save_vgg_onnx(tiny16_weights.params, path, variant)
    with pytest.raises(WeightsError, match=message):
        convert(path, "caffe")


def test_onnx_garbage_and_truncation(tiny16_weights, tmp_path):
    onnx_format = pytest.importorskip("onnx_format")
    path = tmp_path / "model.onnx"
    onnx_format.save_vgg_onnx(tiny16_weights.params, path)
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cut.onnx: not an ONNX model"):
        convert(tmp_path / "cut.onnx", "caffe")
    (tmp_path / "text.onnx").write_text("hello")
    with pytest.raises(WeightsError, match="not an ONNX model"):
        load_weights(tmp_path / "text.onnx", "caffe")


def test_checksums_name_the_network_and_batchnorm_is_refused(tiny16_weights, tmp_path,
                                                            monkeypatch):
    from jaxstyle import sources
    from jaxstyle.files import sha256_of

    checksum = sha256_of(DATA / "vgg19_tiny.pth")
    fake = sources.Source("vgg16-caffe", "vgg16", "x.pth", "http://x", checksum[:8], "",
                          "", CAFFE, "test")
    monkeypatch.setitem(sources.SOURCES, "vgg16-caffe", fake)
    with pytest.raises(WeightsError, match="the checksum is vgg16-caffe's, but the file holds a "
                                           "VGG19"):
        convert(DATA / "vgg19_tiny.pth")
    state = dict(read_state_dict(DATA / "vgg16_tiny.pth"))
    state["features.1.running_mean"] = np.zeros(8, np.float32)
    save_zip(state, tmp_path / "bn.pth")
    with pytest.raises(WeightsError, match="batch-normalised VGG"):
        convert(tmp_path / "bn.pth", "caffe")


def test_vgg19_is_found_before_vgg16_and_version_1_files_are_refused(
        tiny_weights, tiny16_weights, tmp_path, monkeypatch, capsys):
    from flax import serialization

    from jaxstyle import sources

    repo, cache = tmp_path / "repo", tmp_path / "cache"
    repo.mkdir(), cache.mkdir()
    monkeypatch.setattr(sources, "repo_weights_dir", lambda: repo)
    monkeypatch.setattr(sources, "cache_weights_dir", lambda: cache)
    monkeypatch.delenv("JAXSTYLE_WEIGHTS", raising=False)
    vgg16 = save_converted(tiny16_weights, repo / "vgg16-keras.msgpack")
    assert find_weights() == vgg16
    assert load_weights(vgg16).network == "VGG16"
    vgg19 = save_converted(tiny_weights, cache / "vgg19-torchvision.msgpack")
    assert find_weights() == vgg19  # a VGG19 anywhere comes before any VGG16
    # Format 1 (never released: VGG19 only, no licence or origin) is refused in one line that
    # names the file and says what to do, as is a format 2 file that lacks a field.
    state = serialization.msgpack_restore(vgg19.read_bytes())
    old = {k: state[k] for k in ("source", "source_sha256", "preprocessing", "params")}
    v1 = tmp_path / "v1.msgpack"
    v1.write_bytes(serialization.msgpack_serialize({"format": "jaxstyle-vgg19", "version": 1,
                                                    **old}))
    with pytest.raises(WeightsError, match="convert the source file again") as refused:
        load_weights(v1)
    assert str(refused.value) == (f"{v1}: not a converted weights file of this jaxstyle's "
                                  "format (jaxstyle-vgg); convert the source file again")
    assert main(["weights", "info", str(v1)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(v1) in err and "Traceback" not in err
    unlabelled = tmp_path / "unlabelled.msgpack"
    unlabelled.write_bytes(serialization.msgpack_serialize(
        {"format": "jaxstyle-vgg", "version": 2, **old}))
    with pytest.raises(WeightsError, match=f"{unlabelled}: network: expected text, found nothing"):
        load_weights(unlabelled)


def test_cli_names_the_option_and_the_networks_layers(tiny16_weights, tmp_path, capsys):
    from PIL import Image

    weights = save_converted(tiny16_weights, tmp_path / "vgg16.msgpack")
    for name in ("c.png", "s.png"):
        Image.new("RGB", (40, 40), (120, 60, 30)).save(tmp_path / name)
    code = main(["stylize", str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o",
                 str(tmp_path / "o.png"), "--weights", str(weights), "--size", "40",
                 "--style-layers", "relu1_1,relu5_4", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--style-layers: unknown layer 'relu5_4' for VGG16; valid names are conv1_1" in err
    assert "conv5_3 (and relu" in err and not (tmp_path / "o.png").exists()


# Crafted .pth files (about 550 bytes each, the bomb 1 MB): how each is built, and the one line
# `jaxstyle weights info` answers. What the reader did before it checked layouts and sizes is
# noted by each.
_FOUR = np.arange(4, dtype=np.float32)
CRAFTED_PTH = {
    # SIGSEGV
    "negative stride": (
        lambda p: save_zip({"w": crafted(_FOUR, 0, (4_000_000,), (-1,))}, p),
        re.escape("tensor 'w': stride (-1,) is negative, which torch never writes")),
    # returned 3 floats from the memory before the storage
    "small negative stride": (
        lambda p: save_zip({"w": crafted(_FOUR, 0, (4,), (-2,))}, p),
        re.escape("tensor 'w': stride (-2,) is negative, which torch never writes")),
    # allocated 7.45 GiB (a MemoryError traceback under a limit)
    "zero stride": (
        lambda p: save_zip({"w": crafted(_FOUR, 0, (50000, 40000), (0, 0))}, p),
        re.escape("tensor 'w': shape (50000, 40000) holds 2000000000 elements, more than its "
                  "storage's 4")),
    # a ValueError traceback
    "negative dimension": (
        lambda p: save_zip({"w": crafted(_FOUR, 0, (-1, 4), (4, 1))}, p),
        re.escape("tensor 'w': shape (-1, 4) has a negative dimension")),
    # refused already, in other words
    "past the storage, legacy": (
        lambda p: save_legacy({"w": crafted(_FOUR, 2, (2, 2), (2, 1))}, p),
        re.escape("tensor 'w': shape (2, 2) with stride (2, 1) at offset 2 reaches element 5 of "
                  "a storage of 4")),
    # grew the process by 2.1 GB, or a MemoryError traceback under a limit
    "zip bomb": (
        lambda p: save_zip_bomb(p, numel=2**28, inflated=2**30),
        (r"zip member 'archive/data/0' inflates from \d+ to 1073741824 bytes, more than a "
         r"weights file may \(torch.save does not compress\)")),
    # refused already, as a truncated member, after its pickle was read
    "storage over the cap": (
        lambda p: save_zip({"w": crafted(_FOUR, 0, (4,), (1,), numel=2**28 + 1)}, p),
        r"storage size 268435457 is not in \[0, 268435456\]"),
    # a MemoryError traceback (asked for 4 TiB)
    "legacy storage larger than the file": (
        lambda p: _legacy_with_storage_size(p, 2**40),
        r"file is truncated inside storage '0' \(it states 1099511627776 elements\)"),
}


def _legacy_with_storage_size(path, numel: int) -> None:
    """A legacy file whose storage header states `numel` elements (the file holds 4)."""
    save_legacy({"w": _FOUR}, path)
    data = path.read_bytes()
    head = struct.pack("<q", 4) + _FOUR.tobytes()
    assert data.endswith(head)
    path.write_bytes(data[: -len(head)] + struct.pack("<q", numel) + _FOUR.tobytes())


@pytest.fixture(scope="module")
def crafted_cli(tmp_path_factory):
    """`jaxstyle weights info` on every crafted file, in one child process whose address space
    is limited: {name: (path, result)} and the child's peak memory growth."""
    folder = tmp_path_factory.mktemp("crafted")
    paths = {name: folder / f"{name.replace(' ', '-').replace(',', '')}.pth"
             for name in CRAFTED_PTH}
    for name, (build, _) in CRAFTED_PTH.items():
        build(paths[name])
    report = run_child("cli", *map(str, paths.values()), timeout=300)
    results = {r["path"]: r for r in report["results"]}
    return {name: (path, results.get(str(path))) for name, path in paths.items()}, report


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the child bounds its memory through /proc and RLIMIT_AS (Linux)")
@pytest.mark.parametrize("name", CRAFTED_PTH)
def test_crafted_pth_is_one_line_refusal_with_bounded_memory(name, crafted_cli):
    cases, report = crafted_cli
    path, result = cases[name]
    assert result is not None, f"the child never finished reading {path}: {report.get('died')}"
    assert result["code"] == 2, result
    line = result["stderr"]
    assert line.count("\n") == 1 and line.startswith(f"jaxstyle: error: {path}: "), line
    assert re.fullmatch(CRAFTED_PTH[name][1], line.strip()[len(f"jaxstyle: error: {path}: "):])
    assert "died" not in report and report["peak_growth"] < 64 << 20, report


def test_zero_strides_and_understated_bombs_are_read_exactly(tmp_path):
    rows = np.arange(12, dtype=np.float32)
    save_legacy({"w": crafted(rows, 1, (3, 4), (0, 2)), "one": crafted(rows, 5, (1, 1), (99, 7))},
                tmp_path / "zero.pth")
    state = read_state_dict(tmp_path / "zero.pth")
    np.testing.assert_array_equal(state["w"], np.broadcast_to(rows[1:9:2], (3, 4)))
    np.testing.assert_array_equal(state["one"], [[5.0]])
    save_zip({"w": crafted(rows, 0, (4, 4), (0, 1))}, tmp_path / "repeats.pth")
    with pytest.raises(WeightsError, match=r"holds 16 elements, more than its storage's 12"):
        read_state_dict(tmp_path / "repeats.pth")
    # A member whose headers state 16 bytes, deflated from 1 GiB: read only as far as stated.
    save_zip_bomb(tmp_path / "understated.pth", numel=4, inflated=2**30, stated=16)
    np.testing.assert_array_equal(read_state_dict(tmp_path / "understated.pth")["w"], np.zeros(4))
    # ... and one stating 1 GiB for a storage of 16 bytes: its first 16 bytes are read.
    save_zip_bomb(tmp_path / "overstated.pth", numel=4, inflated=2**30)
    np.testing.assert_array_equal(read_state_dict(tmp_path / "overstated.pth")["w"], np.zeros(4))


@pytest.mark.torch
def test_layouts_written_by_real_torch(tmp_path):
    """Views, transposes, offsets, zero strides, shared storages and every weights dtype, as real
    torch writes them in both formats, read back exactly; an expanded tensor holding more
    elements than its storage is refused."""
    pytest.importorskip("torch")
    script = (
        "import sys, numpy as np, torch\n"
        "base = torch.arange(24, dtype=torch.float32)\n"
        "state = {'transposed': base[:12].reshape(3, 4).t(),\n"
        "    'slice': base[5:17].reshape(3, 4)[:, 1:3],\n"
        "    'zero stride': base[:12].reshape(3, 4)[:1].expand(3, 4),\n"
        "    'size 1': base.reshape(24, 1)[3:4], 'empty': base[:0].reshape(0, 5),\n"
        "    'tied a': base, 'tied b': base, 'scalar': torch.tensor(3.5),\n"
        "    'half': torch.arange(6, dtype=torch.float16),\n"
        "    'bf16': torch.arange(6, dtype=torch.bfloat16),\n"
        "    'f64': torch.arange(6, dtype=torch.float64).reshape(2, 3)[:, ::2],\n"
        "    'i8': torch.arange(6, dtype=torch.int8)}\n"
        "torch.save(state, sys.argv[1] + '/zip.pth')\n"
        "torch.save(state, sys.argv[1] + '/legacy.pth', _use_new_zipfile_serialization=False)\n"
        "np.savez(sys.argv[1] + '/want.npz', **{k: v.float().numpy() for k, v in state.items()})\n"
        "torch.save({'w': torch.zeros(4).expand(3, 4)}, sys.argv[1] + '/expanded.pth')\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    want = np.load(tmp_path / "want.npz")
    for name in ("zip.pth", "legacy.pth"):
        got = read_state_dict(tmp_path / name)
        assert list(got) == list(want)
        for key, array in got.items():
            assert array.shape == want[key].shape, (name, key)
            np.testing.assert_array_equal(array.astype(np.float32), want[key], err_msg=key)
        assert got["bf16"].dtype == "bfloat16" and got["i8"].dtype == np.int8
    with pytest.raises(WeightsError, match=r"tensor 'w': shape \(3, 4\) holds 12 elements, more "
                                           r"than its storage's 4"):
        read_state_dict(tmp_path / "expanded.pth")


def test_pickles_that_ask_for_memory_before_reading_are_refused(tmp_path):
    # CPython's unpickler allocates a stated length, and zeroes a memo up to a stated index,
    # before it reads: 13 bytes would have asked for 8 GiB, 10 bytes for 4 GiB of zeroes.
    for name, pickle_bytes, message in [
        ("bytes8", b"\x80\x04\x8e" + struct.pack("<Q", 2**33) + b"ab.", "corrupt pickle"),
        ("memo", b"\x80\x02N" + b"r" + struct.pack("<I", 2**28) + b".", "memo index 268435456"),
    ]:
        save_zip_raw_pickle(pickle_bytes, tmp_path / f"{name}.pth")
        with pytest.raises(WeightsError, match=message):
            read_state_dict(tmp_path / f"{name}.pth")


def _converted_state(weights, tmp_path):
    from flax import serialization

    return serialization.msgpack_restore(save_converted(weights, tmp_path / "w.msgpack")
                                         .read_bytes())


def _set(path: str, value):
    """A change to a converted file's tree: `path` is "a.b.c"; `value` None deletes."""

    def change(state):
        *parents, last = path.split(".")
        node = state
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value(node[last]) if callable(value) else value

    return change


CRAFTED_CONVERTED = {
    "a layer that is an array": (
        _set("params.conv1_1", np.zeros(3, np.float32)),
        "params.conv1_1: expected a kernel and a bias, found an array of shape (3,)"),
    "a missing bias": (_set("params.conv2_1.bias", None),
                       "params.conv2_1.bias: expected an array, found nothing"),
    "params as a list": (
        _set("params", lambda p: list(p.values())),
        "params: expected a map from layer names to kernel and bias, found a list"),
    "bogus preprocessing": (
        _set("preprocessing", "caffe"),
        ("preprocessing: expected a channel_order 'RGB' or 'BGR', a positive scale, 3 means and "
         "3 positive stds, all finite numbers")),
    "a NaN mean": (_set("preprocessing.mean", [0.0, float("nan"), 0.0]),
                   "preprocessing: expected a channel_order"),
    "int8 kernels": (
        _set("params.conv1_1.kernel", lambda k: k.astype(np.int8)),
        ("layer conv1_1: the kernel is int8, not floating point (quantised networks are not "
         "supported)")),
    "a layer of another network": (_set("params.conv9_9", {}),
                                   "params: 'conv9_9' is no VGG layer name"),
    "a network that disagrees": (_set("network", "VGG19"),
                                 "network: the file says 'VGG19' but its layers are a VGG16's"),
    "a source that is a number": (_set("source", 7), "source: expected text, found 7"),
}


@pytest.mark.parametrize("name", CRAFTED_CONVERTED)
def test_crafted_converted_files_are_refused_in_one_line(name, tiny16_weights, tmp_path, capsys):
    from flax import serialization

    change, message = CRAFTED_CONVERTED[name]
    state = _converted_state(tiny16_weights, tmp_path)
    change(state)
    path = tmp_path / "crafted.msgpack"
    path.write_bytes(serialization.msgpack_serialize(state))
    assert main(["weights", "info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"jaxstyle: error: {path}: {message}"), err


def _onnx_int8_kernel(graph):
    from onnx import numpy_helper

    kernel = next(t for t in graph.initializer if t.name == "conv1_1/W")
    kernel.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(kernel).astype(np.int8),
                                            kernel.name))


def _onnx_negative_dims(graph):
    next(t for t in graph.initializer if t.name == "conv1_1/W").dims[0] = -1


def _onnx_no_kernel(graph):
    del graph.node[1].input[1:]  # node 0 is tf2onnx's transpose, node 1 conv1_1


def _onnx_float_pads(graph):
    from onnx import AttributeProto

    pads = next(a for a in graph.node[1].attribute if a.name == "pads")
    pads.ClearField("ints")
    pads.type, pads.f = AttributeProto.FLOAT, 1.0


CRAFTED_ONNX = {
    "int8 kernel": (_onnx_int8_kernel, ("the kernel of 'conv1_1' is stored as INT8, not floating "
                                        "point (quantised networks are not supported)")),
    "negative dims": (_onnx_negative_dims, ("the kernel of 'conv1_1' has dims (-1, 3, 3, 3), one "
                                            "of them negative")),
    "no kernel input": (_onnx_no_kernel, "convolution 'conv1_1' has no kernel input"),
    "float pads": (_onnx_float_pads, ("Conv 'conv1_1': attribute 'pads' is not an integer, a "
                                      "list of integers or a string")),
}


@pytest.mark.parametrize("name", CRAFTED_ONNX)
def test_crafted_onnx_files_are_refused_in_one_line(name, tiny16_weights, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnx_format = pytest.importorskip("onnx_format")
    path = tmp_path / "model.onnx"
    onnx_format.save_vgg_onnx(tiny16_weights.params, path)
    model = onnx.load(str(path))
    change, message = CRAFTED_ONNX[name]
    change(model.graph)
    onnx.save(model, str(path))
    with pytest.raises(WeightsError) as info:
        convert(path, "caffe")
    assert str(info.value) == f"{path}: {message}"
