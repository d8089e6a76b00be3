"""Many content images from files to files: what ``jaxstyle batch`` does.

Content folders are expanded, outputs named and checked before any work, several hosts split the
images between them (`jax.distributed`), and `jaxstyle.stylize.stylize_batch` runs each group of
equally sized images as one batch sharded over the local devices.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax

from jaxstyle.choices import DEFAULT_MAX_PIXELS
from jaxstyle.errors import JaxstyleError, count
from jaxstyle.images import IMAGE_SUFFIXES, check_output_path, load_image, save_image
from jaxstyle.options import StyleOptions
from jaxstyle.quality import measure
from jaxstyle.session import describe_weights, load_weights_named, summary_line, weights_label
from jaxstyle.stylize import stylize_batch


class Hosts(NamedTuple):
    """Several hosts running the same command (`jax.distributed`); each process takes every
    `num_processes`-th image. ``coordinator`` None: this process alone."""

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    timeout: int = 60


def content_paths(items: Sequence[str]) -> list[Path]:
    """Files as given, folders expanded to their images in name order.

    Raises:
      JaxstyleError: a folder without images.
    """
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise JaxstyleError(f"{path}: folder holds no images")
            paths += found
        else:
            paths.append(path)
    return paths


def batch_files(contents: Sequence[str], styles: Sequence[str], output_dir: str, fmt: str,
                options: StyleOptions, log: Callable[[str], None], weights: str | None = None,
                max_pixels: int = DEFAULT_MAX_PIXELS, hosts: Hosts = Hosts(),
                progress_bar: bool = True) -> int:
    """Stylizes every content image into ``output_dir/<name>.<fmt>``; returns the exit code.

    Raises:
      JaxstyleError: bad input (checked before any work), colliding output names.
    """
    from tqdm import tqdm

    paths = content_paths(contents)
    if hosts.coordinator:
        if not 0 <= hosts.process_id < hosts.num_processes:
            raise JaxstyleError("--process-id must be in [0, --num-processes)")
        jax.distributed.initialize(hosts.coordinator, hosts.num_processes, hosts.process_id,
                                   initialization_timeout=hosts.timeout)
        paths = paths[hosts.process_id::hosts.num_processes]
        if not paths:
            log(f"process {hosts.process_id}: no images left for this process")
            return 0
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JaxstyleError(f"--output-dir {folder}: cannot create it ({exc.strerror or exc})"
                            ) from None
    outputs = [folder / f"{p.stem}.{fmt}" for p in paths]
    if len(set(outputs)) != len(outputs):
        raise JaxstyleError("two content images share a name; their outputs would collide")
    inputs = [*map(str, paths), *styles]
    for out in outputs:
        check_output_path(out, inputs)
    images = [load_image(p, max_pixels) for p in paths]
    style_images = [load_image(p, max_pixels) for p in styles]
    model, _ = load_weights_named(weights, options.seed)
    log(describe_weights(model))
    log(f"{count(len(images), 'image')} on {count(jax.local_device_count(), 'device')}")
    bar = tqdm(unit="it", disable=not progress_bar, file=sys.stderr, delay=0.1)

    def on_progress(p) -> None:
        if bar.total != p.total_iterations or p.iteration < bar.n:  # a new size group
            bar.reset(total=p.total_iterations)
        h, w = p.stage.size
        bar.set_description(f"{w}x{h}", refresh=False)
        bar.set_postfix_str(f"summed loss {p.value:.4g}", refresh=False)
        bar.update(p.iteration - bar.n)

    try:
        results = stylize_batch(images, style_images, model, options, callback=on_progress,
                                devices=jax.local_devices())
    finally:
        bar.close()
    label = weights_label(model)
    for out, result, image in zip(outputs, results, images):
        save_image(out, result.image, inputs, label)
        quality = measure(model, result.image, image, style_images, options)
        iterations = len(result.history["total"])
        log(summary_line(out, result, image.shape, iterations,
                         result.timings["optimize"] / max(1, iterations)))
        log(f"quality: {quality.summary()}")
    return 0
