"""The page's requests read: bodies within their byte limits, JSON bodies parsed off the event
loop, and a run's or sweep's JSON checked into a job `jaxstyle.studio.jobs.Request` as the
command line checks its inputs.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as HTTPRequest

from jaxstyle.checks import check_inputs, check_masks
from jaxstyle.errors import JaxstyleError
from jaxstyle.studio import form, limits
from jaxstyle.studio.jobs import Request
from jaxstyle.studio.limits import TooLarge
from jaxstyle.studio.store import RunFolder
from jaxstyle.sweeps import grid, parse_axis


async def read_body(request: HTTPRequest, limit: int) -> bytes:
    """The request's body, refused as soon as it passes `limit` bytes.

    Raises:
      TooLarge: the body (or its declared length) is over `limit`.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{int(declared):,} bytes is over the limit of {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: HTTPRequest) -> dict:
    """The request's JSON object body (`jaxstyle.studio.limits.parse_json`, in a thread).

    Raises:
      JaxstyleError: not a JSON object, too large or too deep, or a number not finite.
    """
    body = await read_body(request, limits.MAX_JSON_BYTES)
    return await run_in_threadpool(limits.parse_json, body)


def job_request(data: dict, kind: str, folder: RunFolder) -> Request:
    """A run or sweep request from the page's JSON (`kind`: "run" or "sweep"), its images in
    `folder`, checked as the CLI checks its inputs (call it in a thread: a sweep checks every
    cell).

    Raises:
      JaxstyleError: a missing content image, options that are not an object or not valid,
        too many axes or cells, inputs the run refuses, or masks that are not the run's.
    """
    content, styles = data.get("content"), limits.style_ids(data.get("styles"))
    if not isinstance(content, str) or not content:
        raise JaxstyleError("choose a content image")
    values = data.get("options") or {}
    if not isinstance(values, dict):
        raise JaxstyleError("options must be an object")
    options = form.options_from_values(values)
    axes: tuple = ()
    if kind == "sweep":
        axes = tuple(parse_axis(text) for text in limits.sweep_texts(data.get("vary")))
        limits.check_axes(axes)
    shapes = [(e.height, e.width, 3) for e in map(folder.image, [content, *styles])]
    for run in grid(options, axes) if axes else [options]:
        check_inputs(shapes[0], shapes[1:], run)
    style_masks, content_mask = _masks_of(data, len(styles), folder)
    if kind == "sweep" and (style_masks or content_mask):
        raise JaxstyleError("a sweep takes no masks: run with the regions, or clear them")
    return Request(kind, content, styles, options, axes, style_masks=style_masks,
                   content_mask=content_mask)


def _masks_of(data: dict, styles: int, folder: RunFolder) -> tuple[tuple | None, str | None]:
    """A request's mask ids, each mask read and checked as `stylize` checks it (a mask
    with no white pixel is refused here, before the job is queued)."""
    style_masks = limits.mask_ids(data.get("style_masks"), styles)
    content_mask = data.get("content_mask")
    if content_mask is not None and not isinstance(content_mask, str):
        raise JaxstyleError("content_mask: give a mask's id, or null")
    check_masks(None if style_masks is None else
                [None if m is None else folder.load_mask(m) for m in style_masks],
                None if content_mask is None else folder.load_mask(content_mask), styles)
    return style_masks, content_mask
