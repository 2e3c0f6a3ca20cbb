"""Reading image files as cameras write them: the one reader of images and masks.

* 8-bit files (JPEG, PNG, BMP, TIFF; gray, RGB, RGBA, palette, CMYK) are read by
  Pillow; alpha is dropped and palettes are expanded.
* 16-bit PNG is read by TensorFlow's PNG decoder: Pillow keeps only the high
  byte of a 16-bit colour PNG.
* TIFF is read by ``tifffile`` (8 or 16 bits, gray or RGB, interleaved or
  planar, extra samples after the colour ones are dropped, the first page of a
  multi-page file). A compression tifffile cannot decode without the optional
  ``imagecodecs`` package (LZW, JPEG, ...) falls back to Pillow, except for
  colour TIFFs of more than 8 bits, which Pillow would cut to 8.
* One size policy for every decoder: before anything is decoded, the image's
  width and height are read from its header (a PNG's IHDR, the first TIFF page's
  tags, Pillow's lazy open of anything else) and a file of more than
  ``max_image_pixels()`` pixels is refused (``ImageTooLargeError``): Pillow's
  default limit, about 89.5 megapixels, unless a command raises it
  (``--max_image_pixels``). Pillow's own decompression-bomb check is switched
  off, so Pillow, TensorFlow's PNG decoder and tifffile agree.
* Samples of more than 8 bits are scaled to 8 by their bit depth b:
  v -> round(v * 255 / (2**b - 1)), clipped to 255. b is the file's bit depth
  (16-bit: round(v / 257), so a 16-bit copy v * 257 of an 8-bit image reads
  back as exactly that image), or ``input_bits`` for sensors that store fewer
  bits in 16 (12: round(v * 255 / 4095)). 8-bit files are read as they are.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import Optional, Tuple

import numpy as np

from util.errors import ConfigError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')
INPUT_BITS_RANGE = (8, 16)  # --input_bits: 0 (the file's own depth) or a value in this range
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_TIFF_SIGNATURES = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')  # classic and BigTIFF
_PILLOW_16BIT = ('I;16', 'I;16L', 'I;16B', 'I;16N')
_clip_warned = threading.Event()  # values above --input_bits: reported for the first file only
#: the most pixels a file may have unless a command raises it: Pillow's own default
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
_limit = {"pixels": DEFAULT_MAX_IMAGE_PIXELS}


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message says why, in one line."""


class ImageTooLargeError(ImageReadError):
    """A file with more pixels than ``max_image_pixels()``, refused before decoding."""


def check_max_image_pixels(value, flag='--max_image_pixels') -> int:
    """``--max_image_pixels`` as a positive int; ConfigError otherwise."""
    try:
        pixels = int(value)
        valid = pixels == float(value) and pixels >= 1
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise ConfigError(f'{flag}={value} must be a positive whole number of pixels (width x '
                          f'height; default {DEFAULT_MAX_IMAGE_PIXELS})')
    return pixels


def set_max_image_pixels(value) -> None:
    """Sets the process's size limit (a command does so from its --max_image_pixels)."""
    _limit['pixels'] = check_max_image_pixels(value)


def max_image_pixels() -> int:
    return _limit['pixels']


def _pillow():
    """PIL.Image, with its own decompression-bomb check off: the limit above, checked from
    the header before any decoder runs, is the one policy."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


def _input(source):
    """What Pillow and tifffile open: a file's path, or a stream over an image already in
    memory (an upload to the HTTP service)."""
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)


def _header_size(path, head: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the file's header without decoding it; None when no header
    can be read (the decoder then says what is wrong)."""
    if head[:8] == _PNG_SIGNATURE and head[12:16] == b'IHDR':
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    try:
        if head[:4] in _TIFF_SIGNATURES:
            import tifffile

            with tifffile.TiffFile(_input(path)) as tif:
                page = tif.pages[0]
                return int(page.imagewidth), int(page.imagelength)
        with _pillow().open(_input(path)) as img:
            return img.size
    except Exception:  # noqa: BLE001  (every reader has its own errors for a bad header)
        return None


def pixel_count(n: int) -> str:
    """``n`` pixels in words, with megapixels where they are a readable number (a small
    image is not "0.0 megapixels")."""
    return f'{n} pixels' + (f' ({n / 1e6:.1f} megapixels)' if n >= 100_000 else '')


def check_image_size(path, head: Optional[bytes] = None) -> Optional[Tuple[int, int]]:
    """The file's (width, height) from its header (None when unreadable);
    ImageTooLargeError when it has more pixels than the limit. ``path`` may also be the
    file's bytes."""
    if head is None:
        if isinstance(path, (bytes, bytearray)):
            head = bytes(path[:26])
        else:
            with open(path, 'rb') as f:
                head = f.read(26)
    size = _header_size(path, head)
    limit = max_image_pixels()
    if size is not None and size[0] * size[1] > limit:
        raise ImageTooLargeError(f'{size[0]}x{size[1]} = {pixel_count(size[0] * size[1])}, '
                                 f'above the limit of {limit} pixels (--max_image_pixels)')
    return size


def check_input_bits(value) -> int:
    """``--input_bits`` as an int: 0 (each file's own depth) or in INPUT_BITS_RANGE."""
    low, high = INPUT_BITS_RANGE
    try:
        bits = int(value or 0)
        valid = bits == float(value or 0) and (bits == 0 or low <= bits <= high)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ConfigError(f"--input_bits={value} must be 0 (each file's own bit depth) or an "
                          f"integer in {low}..{high}")
    return bits


def _one_line(exc: BaseException) -> str:
    detail = (str(exc).strip().splitlines() or [''])[0][:200]
    return f'{type(exc).__name__}: {detail}' if detail else type(exc).__name__


def _colour(samples: np.ndarray) -> np.ndarray:
    """(H, W, C) -> the colour samples: gray (H, W, 1) or RGB (H, W, 3), alpha dropped."""
    channels = samples.shape[-1]
    return samples[..., :1] if channels < 3 else samples[..., :3]


def _png16(data: bytes) -> np.ndarray:
    import tensorflow as tf

    return _colour(tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy())


def _tifffile_samples(path) -> Optional[Tuple[np.ndarray, int]]:
    """(samples, bits) read by tifffile; None when Pillow should read the file instead."""
    import tifffile

    with tifffile.TiffFile(_input(path)) as tif:
        page = tif.pages[0]
        photometric = int(page.photometric)
        if photometric not in (0, 1, 2):  # not MINISWHITE, MINISBLACK, RGB: palette, CMYK, ...
            return None
        try:
            arr = page.asarray()
        except (ValueError, KeyError, NotImplementedError) as exc:
            if 'imagecodecs' in str(exc):  # a compression tifffile cannot decode by itself
                return None
            raise
        axes = page.axes
    if arr.dtype == bool:
        arr, bits = arr.astype(np.uint8) * np.uint8(255), 8
    elif arr.dtype in (np.uint8, np.uint16):
        bits = int(page.bitspersample)
    else:
        raise ImageReadError(f'{arr.dtype} samples are not supported; save 8- or 16-bit '
                             'unsigned integers')
    if set(axes) - {'Y', 'X', 'S'}:
        raise ImageReadError(f'TIFF axes {axes} are not supported; save one image per page')
    if 'S' not in axes:
        arr = arr[..., None]
    elif axes.index('S') == 0:  # planar: one plane per sample
        arr = np.moveaxis(arr, 0, -1)
    arr = arr[..., :3] if photometric == 2 else arr[..., :1]
    if photometric == 0:  # MINISWHITE: 0 is white
        arr = (2 ** bits - 1) - arr
    return arr, bits


def _pillow_samples(path) -> Tuple[np.ndarray, int]:
    with _pillow().open(_input(path)) as img:
        if img.mode in _PILLOW_16BIT:
            return np.asarray(img).astype(np.uint16)[..., None], 16
        if img.mode in ('I', 'F'):
            raise ImageReadError(f'32-bit {img.mode} images are not supported; save 8 or 16 '
                                 'bits per sample')
        bits = getattr(img, 'tag_v2', {}).get(258, (8,))  # TIFF BitsPerSample
        bits = bits if isinstance(bits, tuple) else (bits,)
        if max(bits) > 8:
            raise ImageReadError(f'only Pillow reads this {max(bits)}-bit TIFF, and only 8 of its '
                                 'bits; for LZW, JPEG or other compression install imagecodecs '
                                 '(pip install imagecodecs), or save it uncompressed')
        if img.mode in ('1', 'L', 'LA'):
            return np.asarray(img.convert('L'), dtype=np.uint8)[..., None], 8
        if img.mode in ('RGBA', 'PA') or (img.mode == 'P' and 'transparency' in img.info):
            img = img.convert('RGBA')
        return np.asarray(img.convert('RGB'), dtype=np.uint8), 8


def read_samples(path) -> Tuple[np.ndarray, int]:
    """The file's colour samples at their own depth and its bits per sample.

    Returns (samples, bits): uint8 or uint16 (H, W, 1) for gray or (H, W, 3)
    for colour. ``path`` may also be the file's bytes (an upload). Raises ImageReadError
    for anything that cannot be read.
    """
    in_memory = isinstance(path, (bytes, bytearray))
    path = path if in_memory else str(path)
    try:
        with io.BytesIO(path) if in_memory else open(path, 'rb') as f:
            head = f.read(26)
            check_image_size(path, head)  # before any decoder runs
            if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[24] == 16:
                return _png16(head + f.read()), 16
        if head[:4] in _TIFF_SIGNATURES:
            found = _tifffile_samples(path)
            if found is not None:
                return found
        return _pillow_samples(path)
    except ImageReadError:
        raise
    except Exception as exc:  # every decoder has its own exceptions
        raise ImageReadError(_one_line(exc)) from exc


def to_uint8(samples: np.ndarray, bits: int, input_bits: int = 0, name: str = '') -> np.ndarray:
    """Samples of ``bits`` bits as uint8: v -> round(v * 255 / (2**b - 1)), clipped,
    b = ``input_bits`` or (0) ``bits``; 8-bit samples are returned as they are."""
    if samples.dtype == np.uint8:
        return samples
    top = 2 ** int(input_bits or bits) - 1
    values = samples.astype(np.uint32)
    if input_bits and values.max(initial=0) > top and not _clip_warned.is_set():
        _clip_warned.set()
        logger.warning('%s has values above %d, the largest of %d bits (--input_bits=%d): '
                       'they become 255 (other files are not reported)', name or 'an image',
                       top, input_bits, input_bits)
    values = np.minimum(values, top)
    # round(v * 255 / top) in integers; top is odd, so there are no halves to break
    return ((values * 510 + top) // (2 * top)).astype(np.uint8)


def read_rgb8(path, input_bits: int = 0, name: str = '') -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file of any format, mode and bit depth above;
    ``path`` may also be the file's bytes, ``name`` what a warning calls it."""
    samples, bits = read_samples(path)
    rgb = to_uint8(samples, bits, input_bits, name=name or str(path))
    return np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb


def read_mask_file(path) -> np.ndarray:
    """bool (H, W): defect where the mask file is non-zero in any colour channel."""
    samples, _ = read_samples(path)
    return samples.any(axis=-1)


def image_size(path) -> Tuple[int, int]:
    """(width, height) of an image file, from its header (checked against the limit)."""
    size = check_image_size(path)
    if size is None:
        samples, _ = read_samples(path)
        return samples.shape[1], samples.shape[0]
    return size
