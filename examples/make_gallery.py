"""Puts content, style and result side by side for the README's gallery (docs/gallery/*.jpg).

    python examples/make_gallery.py CONTENT STYLE RESULT OUT.jpg

Each picture is scaled to the result's height; the style is cropped to a square. The JPEG is
written at the quality that keeps it near 150 KB.
"""

import io
import sys

from PIL import Image

TARGET_BYTES = 150_000


def side_by_side(content: Image.Image, style: Image.Image, result: Image.Image) -> Image.Image:
    height = result.height
    content = content.resize((round(content.width * height / content.height), height),
                             Image.LANCZOS)
    side = min(style.size)
    left, top = (style.width - side) // 2, (style.height - side) // 2
    style = style.crop((left, top, left + side, top + side)).resize((height, height), Image.LANCZOS)
    gap = 8
    sheet = Image.new("RGB", (content.width + style.width + result.width + 2 * gap, height),
                      "white")
    x = 0
    for picture in (content, style, result):
        sheet.paste(picture, (x, 0))
        x += picture.width + gap
    return sheet


def save_small(image: Image.Image, path: str) -> None:
    for quality in range(90, 40, -5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= TARGET_BYTES:
            break
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    content, style, result = (Image.open(p).convert("RGB") for p in sys.argv[1:4])
    save_small(side_by_side(content, style, result), sys.argv[4])
    print(f"wrote {sys.argv[4]}")
