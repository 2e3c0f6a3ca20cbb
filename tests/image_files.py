"""Writes the image files industrial cameras produce: 16-bit PNG (Pillow cannot write colour
ones, so the file is assembled here from the PNG specification) and TIFF (tifffile)."""

import struct
import zlib

import numpy as np

_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray+alpha, RGB, RGBA


def write_png16(path, samples):
    """A 16-bit PNG of uint16 ``samples`` (H, W) or (H, W, C), C in 1..4, no filtering."""
    samples = np.asarray(samples, np.uint16)
    if samples.ndim == 2:
        samples = samples[..., None]
    height, width, channels = samples.shape
    rows = samples.astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


def write_tiff(path, samples, **kwargs):
    """A TIFF of ``samples`` (uint8 or uint16; (H, W) gray or (H, W, C) RGB + extra samples)."""
    import tifffile

    samples = np.asarray(samples)
    if samples.ndim == 3 and "photometric" not in kwargs:
        kwargs["photometric"] = "rgb"
        if samples.shape[-1] > 3:
            kwargs.setdefault("extrasamples", ["unspecified"] * (samples.shape[-1] - 3))
    tifffile.imwrite(path, samples, **kwargs)


def to_16bit(image8):
    """The 16-bit copy of an 8-bit image: v -> v * 257 (255 -> 65535)."""
    return np.asarray(image8, np.uint16) * 257


def to_12bit(image8):
    """An 8-bit image as a 12-bit sensor stores it in 16 bits: round(v * 4095 / 255)."""
    return np.rint(np.asarray(image8, np.float64) * 4095 / 255).astype(np.uint16)
