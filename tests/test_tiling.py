"""Tiled rendering of outputs larger than memory allows."""

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY_LAYERS, loss_config, smooth_image, write_image
from PIL import Image

from jaxstyle import StyleOptions, stylize
from jaxstyle.cli import main
from jaxstyle.stages import tile_starts
from jaxstyle.targets import style_targets
from jaxstyle.tiling import paste, tiled_style_target_list


@pytest.mark.parametrize("length, tile, overlap", [(100, 48, 8), (97, 32, 16), (48, 48, 8),
                                                   (4096, 512, 64), (30, 48, 8)])
def test_tiles_cover_the_image_with_the_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    for a, b in zip(starts, starts[1:]):
        assert tile - (b - a) >= overlap  # consecutive tiles share at least `overlap` pixels


def test_tiled_style_targets_match_the_whole_style_image(tiny_weights):
    style = smooth_image(64, 96, 1)
    config = loss_config(**TINY_LAYERS)
    model = [tiny_weights.preprocessing.to_model(jnp.asarray(style))]
    tiled = tiled_style_target_list(tiny_weights.params, model, config, None, False, 40, 8)[0]
    whole = style_targets(tiny_weights.params, model, config)
    for layer in TINY_LAYERS["style_layers"]:
        rel = float(jnp.abs(tiled[layer] - whole[layer]).max() / jnp.abs(whole[layer]).max())
        assert rel < 0.05, (layer, rel)  # only the zero padding at tile borders differs
    untiled = tiled_style_target_list(tiny_weights.params, model, config, None, False, 96, 8)[0]
    for layer in TINY_LAYERS["style_layers"]:
        np.testing.assert_allclose(untiled[layer], whole[layer], rtol=1e-5, atol=1e-7)


def test_paste_feathers_linearly_towards_earlier_tiles():
    canvas = np.zeros((20, 30, 3), np.float32)
    tile = np.ones((12, 16, 3), np.float32)
    out = paste(canvas, tile, (8, 14, 12, 16), 4)  # a tile above and one to the left exist
    ramp = (np.arange(4) + 0.5) / 4
    np.testing.assert_allclose(out[14, 14:18, 0], ramp, rtol=1e-6)  # rising over the overlap
    np.testing.assert_allclose(out[8:12, 20, 0], ramp, rtol=1e-6)
    np.testing.assert_allclose(out[8:20, 14:30][4:, 4:], 1.0)  # the rest is the tile
    assert out[:8].max() == 0 and out[:, :14].max() == 0  # nothing outside the window
    first = paste(canvas, tile, (0, 0, 12, 16), 4)  # nothing before it: a plain copy
    np.testing.assert_allclose(first[:12, :16], 1.0)


@pytest.mark.slow
def test_blending_introduces_no_seams(tiny_weights):
    # Tiles that really change the picture (each tile's run moves its pixels away from where its
    # neighbour left them): across either end of an overlap, what the run changed must change
    # no more from one column to the next than it does elsewhere. Measured on the change
    # (result - content), where a seam stands out from the photo's own edges: with the ramps the
    # border columns are at most 0.93x the median column; pasting without them (the ramp all
    # ones, a hard edge at the overlap's start) gives 2.07x, keeping the earlier tile over the
    # whole overlap (all zeros, a hard edge at its end) 2.02x.
    content = smooth_image(72, 100, 0)
    options = StyleOptions(size=100, iterations=6, tile_size=48, tile_overlap=8,
                           style_strength=30.0, stop_change=0.0, **TINY_LAYERS)
    result = stylize(content, [smooth_image(64, 64, 1)], tiny_weights, options)
    change = result.image - content
    assert np.abs(change).mean() > 0.01  # the tiles were painted
    columns = np.abs(np.diff(change, axis=1)).mean(axis=(0, 2))  # [W - 1]
    starts = [left for left in tile_starts(100, 48, 8) if left > 0]  # 26 and 52
    borders = [c for left in starts for c in (left - 1, left + 8 - 1)]  # the overlap's two ends
    typical = np.median(columns)
    assert max(columns[c] for c in borders) < 1.5 * typical, (columns[borders], typical)


def test_tiled_run_covers_every_tile_and_changes_the_image(tiny_weights):
    content = smooth_image(72, 96, 0)
    options = StyleOptions(size=96, iterations=4, progress_every=4, tile_size=48,
                           tile_overlap=8, style_weight=1e4, **TINY_LAYERS)
    seen = []
    result = stylize(content, [smooth_image(64, 64, 1)], tiny_weights, options,
                     callback=lambda p: seen.append((p.tile, p.tiles)))
    assert sorted(set(seen)) == [(i, 6) for i in range(6)]
    assert result.image.shape == (72, 96, 3) and len(result.history["total"]) == 24
    changed = np.abs(result.image - content).mean(-1)
    assert (changed[:36, :48].mean() > 1e-3) and (changed[36:, 48:].mean() > 1e-3)


def test_tiles_from_the_command_line(tmp_path, tiny_weights_file, capsys):
    content = write_image(tmp_path / "c.png", smooth_image(60, 80, 0))
    style = write_image(tmp_path / "s.png", smooth_image(64, 64, 1))
    out = tmp_path / "o.png"
    code = main(["stylize", str(content), str(style), "-o", str(out), "--weights",
                 str(tiny_weights_file), "--size", "80", "--iterations", "2", "--tile-size", "48",
                 "--tile-overlap", "8", "--content-layers", "relu2_1", "--style-layers",
                 "relu1_1", "-q"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (80, 60)
