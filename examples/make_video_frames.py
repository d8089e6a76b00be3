"""Frames of a clip above the same frames of its stylized version, for the video guide
(docs/video_frames.jpg).

    python examples/make_video_frames.py clip.mp4 clip_marbled.mp4 docs/video_frames.jpg \
        [--frames 1,8,16,24]
"""

import argparse

import av
from PIL import Image


def frames(path: str, wanted: list[int]) -> list[Image.Image]:
    """The frames numbered `wanted` (from 1) of a video file."""
    found = {}
    with av.open(path) as container:
        for number, frame in enumerate(container.decode(container.streams.video[0]), 1):
            if number in wanted:
                found[number] = frame.to_image()
    return [found[n] for n in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clip")
    parser.add_argument("stylized")
    parser.add_argument("output")
    parser.add_argument("--frames", default="1,8,16,24")
    args = parser.parse_args()
    wanted = [int(n) for n in args.frames.split(",")]
    rows = [frames(args.clip, wanted), frames(args.stylized, wanted)]
    width, height = rows[1][0].size  # the stylized size (odd sizes are padded when encoded)
    gap = 6
    sheet = Image.new("RGB", (len(wanted) * (width + gap) - gap, 2 * height + gap), "white")
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            sheet.paste(picture.resize((width, height), Image.LANCZOS),
                        (c * (width + gap), r * (height + gap)))
    sheet.save(args.output, quality=90)
    print(f"wrote {args.output}: frames {args.frames} of {args.clip} above {args.stylized}")


if __name__ == "__main__":
    main()
