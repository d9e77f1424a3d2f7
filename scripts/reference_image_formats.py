"""Small images in every format glassbox reads from a class folder (torchvision's ImageFolder
list: PNG, JPEG, BMP, TIFF, WebP, PPM/PGM), and Pillow's decoding of each, for the decoder
parity test (data/tests/image_formats.rs).

tests/fixtures/image_formats/: one 20 × 14 picture (smooth gradients plus a few hard edges, so
lossy codecs have both to get right) saved as each format, and reference.json with what
`PIL.Image.open(f).convert("RGB")` gives — the pixels a transformers image processor starts from.
Run with .venv-ref/bin/python (Pillow with WebP).
"""
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "image_formats"


def picture():
    h, w = 14, 20
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 / (w - 1), y * 255 / (h - 1), (x + y) * 255 / (w + h - 2)], axis=-1)
    rgb[3:7, 5:11] = [250, 20, 30]  # a red block with hard edges
    rgb[9:12, 13:18] = [10, 10, 240]
    return Image.fromarray(rgb.round().astype(np.uint8), "RGB")


def with_alpha(img):
    """`img` with an alpha ramp from transparent to opaque across its width."""
    rgba = img.convert("RGBA")
    w, h = rgba.size
    alpha = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def ramp(img):
    """Low bytes 0–255 across the picture, so the high byte is not the only information."""
    w, h = img.size
    return (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 256).astype(np.uint16)


def write_png16(path, rgb, colour_type=2):
    """A minimal 16-bit PNG (RGB, or grey with `colour_type` 0) with one IDAT chunk."""
    h, w = rgb.shape[:2]
    rows = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    img = picture()
    files = {
        "rgb.png": lambda p: img.save(p),
        "rgb.bmp": lambda p: img.save(p),
        "rgb.tiff": lambda p: img.save(p),
        "rgb_lzw.tif": lambda p: img.save(p, compression="tiff_lzw"),
        "lossless.webp": lambda p: img.save(p, lossless=True),
        "lossy.webp": lambda p: img.save(p, quality=90),
        "rgb.ppm": lambda p: img.save(p),
        "gray.pgm": lambda p: img.convert("L").save(p),
        "rgb.jpg": lambda p: img.save(p, quality=95),
        # Colour modes a folder of real photos holds, each converted by Pillow's own rules:
        # alpha dropped (not composited), palette looked up, grey repeated, CMYK inverted.
        "palette.png": lambda p: img.convert("P").save(p),
        "rgba.png": lambda p: with_alpha(img).save(p),
        "gray.png": lambda p: img.convert("L").save(p),
        "gray_alpha.png": lambda p: with_alpha(img).convert("LA").save(p),
        "cmyk.jpg": lambda p: img.convert("CMYK").save(p, quality=95),
        "progressive.jpg": lambda p: img.save(p, quality=95, progressive=True),
        # 16 bits a channel (Pillow cannot write it): Pillow keeps each value's high byte.
        "rgb16.png": lambda p: write_png16(p, np.asarray(img).astype(np.uint16) * 257 + ramp(img)),
    }
    reference = {}
    for name, save in files.items():
        path = OUT / name
        save(path)
        decoded = np.asarray(Image.open(path).convert("RGB"))
        reference[name] = {"height": decoded.shape[0], "width": decoded.shape[1],
                           "rgb": decoded.reshape(-1).tolist()}
    (OUT / "reference.json").write_text(json.dumps(reference))


if __name__ == "__main__":
    main()
