"""Photo-like ImageFolder archives made by the tests: JPEG and PNG files of mixed sizes and
modes (RGB, grayscale, palette, CMYK), each class a colour and a shape, so a model learns
them in a few epochs at a small image size."""

import io
import zipfile

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(200, 40, 40), (40, 160, 60), (50, 70, 210), (220, 200, 40)]
MODES = ["RGB", "L", "P", "CMYK"]  # JPEG takes RGB, L and CMYK; PNG takes RGB, L and P


def photo(label: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A noisy background with the class's shape in the class's colour, somewhere."""
    w, h = size
    noise = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(noise, "RGB")
    draw = ImageDraw.Draw(im)
    r = int(min(w, h) * rng.uniform(0.25, 0.4))
    cx, cy = int(rng.uniform(r, w - r)), int(rng.uniform(r, h - r))
    box = (cx - r, cy - r, cx + r, cy + r)
    colour = COLOURS[label % len(COLOURS)]
    if label % 2:
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return im


def encoded(im: Image.Image, index: int) -> tuple[str, bytes]:
    """(extension, bytes): JPEG and PNG in turn, in each format's modes in turn."""
    out = io.BytesIO()
    mode = MODES[index % len(MODES)]
    if index % 2:
        im.convert("RGB" if mode == "P" else mode).save(out, "JPEG", quality=90)
        return "jpg", out.getvalue()
    im.convert("RGB" if mode == "CMYK" else mode).save(out, "PNG")
    return "png", out.getvalue()


def photo_zip(
    classes: int = 3, per_class: int = 40, sizes: tuple[int, int] = (40, 96), seed: int = 0
) -> bytes:
    """An ImageFolder zip (<class>/<n>.<ext>) of photos of random sizes in `sizes`."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for label in range(classes):
            for n in range(per_class):
                size = (int(rng.integers(*sizes)), int(rng.integers(*sizes)))
                ext, data = encoded(photo(label, rng, size), n + label)
                zf.writestr(f"photos/class_{label}/{n:04d}.{ext}", data)
    return buf.getvalue()


def noise_zip(count: int, side: int, seed: int = 0) -> bytes:
    """An ImageFolder zip of `count` PNGs of noise, side x side: large and incompressible."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for n in range(count):
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            out = io.BytesIO()
            Image.fromarray(pixels).save(out, "PNG", compress_level=1)
            zf.writestr(f"class_{n % 2}/{n:05d}.png", out.getvalue())
    return buf.getvalue()
