"""Makes the example clip for ``jaxstyle video``: a slow camera pan across a photograph, with a
tone on its audio track (so you can check that the audio comes through).

    python examples/make_clip.py clip.mp4 [--image examples/chelsea.jpg] [--height 170]
        [--frames 24] [--shift 3] [--fps 12]

The camera moves right by SHIFT pixels a frame, so the picture moves left: a known motion
against which flicker can be measured (`jaxstyle.temporal.flicker` with shift (0, -SHIFT)).
"""

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 16000


def pan_clip(image: Path, output: Path, height: int, frames: int, shift: int, fps: int) -> None:
    """Writes `frames` windows of `image` (scaled to `height`), each `shift` pixels to the right
    of the last, as a lossless H.264 video at `fps` with a 440 Hz tone."""
    photo = Image.open(image).convert("RGB")
    photo = photo.resize((round(photo.width * height / photo.height), height), Image.LANCZOS)
    pixels = np.asarray(photo)
    width = pixels.shape[1] - shift * (frames - 1)
    width -= width % 2
    if width < 32:
        raise SystemExit(f"{image}: too narrow for {frames} frames moving {shift} px each")
    with av.open(str(output), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        video.width, video.height, video.pix_fmt = width, height, "yuv444p"
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        for i in range(frames):
            window = np.ascontiguousarray(pixels[:, i * shift:i * shift + width])
            container.mux(video.encode(av.VideoFrame.from_ndarray(window, format="rgb24")))
        container.mux(video.encode(None))
        seconds = np.arange(int(SAMPLE_RATE * frames / fps)) / SAMPLE_RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * seconds)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.time_base = Fraction(1, SAMPLE_RATE)
            frame.pts = start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--image", type=Path, default=HERE / "chelsea.jpg")
    parser.add_argument("--height", type=int, default=170)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--shift", type=int, default=3)
    parser.add_argument("--fps", type=int, default=12)
    args = parser.parse_args()
    pan_clip(args.image, args.output, args.height, args.frames, args.shift, args.fps)
    print(f"wrote {args.output}: {args.frames} frames at {args.fps} fps, moving {args.shift} px "
          "a frame, with a 440 Hz tone")


if __name__ == "__main__":
    main()
