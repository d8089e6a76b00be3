"""Video: temporal consistency (Ruder et al. 2016), streaming I/O with audio, resume, bad input."""

import os
import signal
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYER_FLAGS, smooth_image, write_image
from PIL import Image

from jaxstyle import temporal
from jaxstyle.cli import main

av = pytest.importorskip("av")
pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from make_clip import pan_clip  # noqa: E402


@pytest.fixture
def clip(tmp_path):
    """A 5-frame pan (3 px a frame) across a smooth texture, with a tone, at 12 fps."""
    write_image(tmp_path / "texture.png", smooth_image(48, 80, 3))
    pan_clip(tmp_path / "texture.png", tmp_path / "clip.mp4", 48, 5, 3, 12)
    return tmp_path / "clip.mp4"


def test_flow_warp_and_consistency_on_a_known_pan():
    base = smooth_image(40, 90, 1)
    before, after = base[:, 10:74], base[:, 7:71]  # the picture moves right by 3 px
    backward = temporal.optical_flow(after, before)
    assert abs(float(np.median(backward[..., 0])) + 3) < 0.1
    assert abs(float(np.median(backward[..., 1]))) < 0.25  # a smooth picture: little texture
    predicted = np.asarray(temporal.warp(jnp.asarray(before), jnp.asarray(backward)))
    assert np.abs(predicted - after)[4:-4, 6:-4].mean() < 0.1 * np.abs(before - after).mean()
    forward = temporal.optical_flow(before, after)
    c = np.asarray(temporal.consistency_weights(jnp.asarray(forward), jnp.asarray(backward)))
    assert c.mean() > 0.9
    assert c[:, :3].max() == 0.0  # the three columns that entered have no previous pixel
    # Flows that disagree (an object that vanished) are zeroed; so are motion boundaries.
    wrong = np.asarray(temporal.consistency_weights(jnp.asarray(forward), -jnp.asarray(forward)
                                                    + 5.0))
    assert wrong.mean() < 0.1
    edge = np.zeros((20, 20, 2), np.float32)
    edge[:, 10:, 0] = 6.0
    at_edge = np.asarray(temporal.consistency_weights(jnp.asarray(-edge), jnp.asarray(edge)))
    assert at_edge[:, 9:11].max() == 0.0 and at_edge[:, :5].min() == 1.0


def test_long_term_weights_keep_what_nearer_frames_miss():
    near = jnp.asarray([[1.0, 0.0, 0.0]])
    far = jnp.asarray([[1.0, 1.0, 0.0]])
    kept = temporal.long_term_weights([near, far])
    np.testing.assert_array_equal(kept[1], [[0.0, 1.0, 0.0]])


def test_temporal_loss_weights_each_pixel():
    from jaxstyle.terms import temporal_loss

    x, warped = jnp.zeros((2, 2, 3)), jnp.ones((2, 2, 3))
    weights = jnp.asarray([[1.0, 0.0], [0.0, 0.0]])
    assert float(temporal_loss(x, warped, weights)) == pytest.approx(3 / 12)
    assert float(temporal_loss(x, warped, jnp.zeros((2, 2)))) == 0.0


def test_video_keeps_frames_size_rate_and_audio(clip, tmp_path, tiny_weights_file, capsys):
    out = tmp_path / "out.mp4"
    code = main(["video", str(clip), str(ROOT / "examples" / "marbled.jpg"), "-o", str(out),
                 "--weights", str(tiny_weights_file), "--size", "0", "--iterations", "3",
                 *TINY_LAYER_FLAGS, "-q"])
    assert code == 0, capsys.readouterr().err
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0], b.streams.video[0]
        assert sum(1 for _ in b.decode(vb)) == 5
        assert (vb.width, vb.height) == (va.width, va.height)
        assert vb.average_rate == va.average_rate == 12
        assert [s.codec_context.name for s in b.streams.audio] == ["aac"]
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        packets = [bytes(p) for p in a.demux(audio=0) if p.size]
        copied = [bytes(p) for p in b.demux(audio=0) if p.size]
        assert packets == copied  # passed through untouched
    assert not (tmp_path / "out.mp4.frames").exists()


def test_interrupted_video_resumes_to_the_same_frames(clip, tmp_path, tiny_weights_file,
                                                      monkeypatch, capsys):
    from jaxstyle import video

    args = [str(clip), str(ROOT / "examples" / "marbled.jpg"), "--weights",
            str(tiny_weights_file), "--size", "0", "--iterations", "4", *TINY_LAYER_FLAGS, "-q"]
    assert main(["video", *args, "-o", str(tmp_path / "whole")]) == 0
    saved = video.save_image

    def stop_after_two(path, *rest):
        written = saved(path, *rest)
        if path.name == "frame_00002.png":
            os.kill(os.getpid(), signal.SIGINT)
        return written

    monkeypatch.setattr(video, "save_image", stop_after_two)
    part = tmp_path / "part"
    assert main(["video", *args, "-o", str(part)]) == 128 + signal.SIGINT
    assert sorted(p.name for p in part.glob("frame_*")) == ["frame_00001.png", "frame_00002.png"]
    monkeypatch.setattr(video, "save_image", saved)
    assert main(["video", *args, "-o", str(part)]) == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "whole").glob("frame_*"))
    assert len(names) == 5 and names == sorted(p.name for p in part.glob("frame_*"))
    for name in names:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "whole" / name)),
                                      np.asarray(Image.open(part / name)))
    # Other options with the same output: the finished frames are not silently mixed in.
    code = main(["video", *args, "-o", str(part), "--tv-weight", "1"])
    assert code == 2 and "already holds frames" in capsys.readouterr().err


@pytest.mark.slow
def test_multi_pass_runs_batches_and_resumes_to_the_same_frames(clip, tmp_path, tiny_weights_file,
                                                               monkeypatch, capsys):
    from jaxstyle import video

    args = [str(clip), str(ROOT / "examples" / "marbled.jpg"), "--weights",
            str(tiny_weights_file), "--size", "0", "--iterations", "3", "--passes", "3",
            "--pass-batch", "2", *TINY_LAYER_FLAGS, "-q"]
    assert main(["video", *args, "-o", str(tmp_path / "whole")]) == 0
    saved, batches = video.save_image, []
    original_batch = video.stylize_batch

    def counting_batch(contents, *rest, **kwargs):
        batches.append(len(contents))
        return original_batch(contents, *rest, **kwargs)

    def stop_in_pass_two(path, *rest):
        written = saved(path, *rest)
        if path.parent.name == "pass_2" and path.name == "frame_00002.png":
            os.kill(os.getpid(), signal.SIGINT)
        return written

    monkeypatch.setattr(video, "save_image", stop_in_pass_two)
    monkeypatch.setattr(video, "stylize_batch", counting_batch)
    part = tmp_path / "part"
    assert main(["video", *args, "-o", str(part)]) == 128 + signal.SIGINT
    assert batches == [2, 2, 1, 2]  # pass 1 in three batches, then pass 2's first
    monkeypatch.setattr(video, "save_image", saved)
    assert main(["video", *args, "-o", str(part)]) == 0, capsys.readouterr().err
    assert batches == [2, 2, 1, 2, 2, 1, 2, 2, 1]  # only what was left: pass 2's rest, pass 3
    names = sorted(p.name for p in part.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "whole").iterdir()) and len(names) == 5
    for name in names:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "whole" / name)),
                                      np.asarray(Image.open(part / name)))


BAD = {
    "not a video": ("{text}", "{tmp}/o.mp4", "not a readable video"),
    "zero frames": ("{empty}", "{tmp}/o.mp4", "holds no numbered frames"),
    "corrupt stream": ("{truncated}", "{tmp}/o.mp4", "not a readable video"),
    "frames of different sizes": ("{mixed}", "{tmp}/o.mp4", "frames differ in size"),
    "unwritable output": ("{clip}", "{tmp}/nope/o.mp4", "does not exist"),
    "output is the input": ("{clip}", "{clip}", "refusing to write over the input"),
    "unknown extension": ("{clip}", "{tmp}/o.xyz", "unknown video extension"),
    "frames over --max-pixels": ("{clip} --max-pixels 100", "{tmp}/o.mp4",
                                 "frame 1 is 68x48 px, over --max-pixels 100"),
    "work folder holds the user's files": ("{clip}", "{tmp}/kept.mp4",
                                           "holds files that are not a jaxstyle run's"),
    "work folder is the input": ("{tmp}/in.mp4.frames", "{tmp}/in.mp4", "is the input"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_video_input_is_one_line_and_leaves_nothing(case, clip, tmp_path, tiny_weights_file,
                                                        capsys):
    (tmp_path / "notes.mp4").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "cut.mp4").write_bytes(clip.read_bytes()[:1500])
    (tmp_path / "mixed").mkdir()
    write_image(tmp_path / "mixed" / "f1.png", smooth_image(32, 32, 3))
    write_image(tmp_path / "mixed" / "f2.png", smooth_image(32, 40, 3))
    (tmp_path / "kept.mp4.frames").mkdir()  # the user's folder, named like a work folder
    (tmp_path / "kept.mp4.frames" / "mine.txt").write_text("precious")
    (tmp_path / "in.mp4.frames").mkdir()
    for i in (1, 2):
        write_image(tmp_path / "in.mp4.frames" / f"{i:04d}.png", smooth_image(32, 32, 3))
    names = dict(text=tmp_path / "notes.mp4", empty=tmp_path / "empty", clip=clip,
                 truncated=tmp_path / "cut.mp4", mixed=tmp_path / "mixed", tmp=tmp_path)
    source, output, message = BAD[case]
    before = sorted(tmp_path.rglob("*"))
    source, *extra = source.format(**names).split()
    code = main(["video", source, str(ROOT / "examples" / "marbled.jpg"), *extra,
                 "-o", output.format(**names), "--weights", str(tiny_weights_file), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("jaxstyle: error:"), err
    assert message in err[0]
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.real
@pytest.mark.slow
def test_temporal_loss_at_least_halves_flicker(real_vgg16, tmp_path):
    """With the real network: flicker along the known motion, temporal loss on and off."""
    pan_clip(ROOT / "examples" / "chelsea.jpg", tmp_path / "clip.mp4", 72, 5, 3, 12)
    found = {}
    for weight in ("1e3", "0"):
        out = tmp_path / f"frames_{weight}"
        assert main(["video", str(tmp_path / "clip.mp4"), str(ROOT / "examples" / "marbled.jpg"),
                     "-o", str(out), "--size", "0",  # the frames' size: motion stays 3 px
                     "--iterations", "30", "--temporal-weight", weight, "-q"]) == 0
        frames = [np.asarray(Image.open(p), np.float32) / 255 for p in sorted(out.glob("*.png"))]
        found[weight] = temporal.flicker(frames, (0, -3))
    assert found["1e3"] <= 0.5 * found["0"], found
