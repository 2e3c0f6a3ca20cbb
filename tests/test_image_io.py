"""The one image reader (data/image_io.py): 8/16-bit PNG and TIFF, bit-depth scaling,
--input_bits, masks non-zero in any channel."""

import logging

import numpy as np
import pytest
from PIL import Image

from data import image_io
from data.image_io import ImageReadError, check_input_bits, read_mask_file, read_rgb8
from tests.image_files import to_12bit, to_16bit, write_png16, write_tiff
from util.errors import ConfigError


@pytest.fixture
def rgb8():
    return np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)


def test_16bit_png_and_tiff_copies_read_as_the_8bit_image(tmp_path, rgb8):
    Image.fromarray(rgb8).save(tmp_path / "8.png")
    alpha = np.full(rgb8.shape[:2] + (1,), 60000, np.uint16)
    write_png16(tmp_path / "16.png", to_16bit(rgb8))
    write_png16(tmp_path / "16a.png", np.concatenate([to_16bit(rgb8), alpha], -1))
    write_tiff(tmp_path / "16.tif", to_16bit(rgb8))
    write_tiff(tmp_path / "8.tif", rgb8)
    # planar (one plane per sample) with two extra samples after the colour ones
    extra = np.concatenate([to_16bit(rgb8), alpha, alpha], -1)
    write_tiff(tmp_path / "planar.tiff", np.moveaxis(extra, -1, 0), photometric="rgb",
               planarconfig="separate", extrasamples=["unspecified", "unspecified"])
    write_tiff(tmp_path / "zlib.tif", to_16bit(rgb8), compression="zlib")
    want = read_rgb8(tmp_path / "8.png")
    np.testing.assert_array_equal(want, rgb8)
    for name in ("16.png", "16a.png", "16.tif", "8.tif", "planar.tiff", "zlib.tif"):
        np.testing.assert_array_equal(read_rgb8(tmp_path / name), rgb8, err_msg=name)


def test_16bit_values_are_rounded_by_the_bit_depth_not_cut_to_the_high_byte(tmp_path):
    values = np.array([[0, 128, 129, 385, 386, 65535]], np.uint16)
    want = [0, 0, 1, 1, 2, 255]  # round(v / 257); the high byte would give 0 0 0 1 1 255
    rgb = np.repeat(values[..., None], 3, -1)
    write_png16(tmp_path / "v.png", rgb)
    write_tiff(tmp_path / "v.tif", rgb)
    for name in ("v.png", "v.tif"):
        got = read_rgb8(tmp_path / name)
        assert got[0, :, 0].tolist() == want and (got[..., 0] == got[..., 2]).all(), name


def test_gray_16bit_png_and_tiff_become_three_equal_channels(tmp_path, rgb8):
    gray = rgb8[..., 1]
    Image.fromarray(gray).save(tmp_path / "8.png")
    write_png16(tmp_path / "16.png", to_16bit(gray))
    Image.fromarray(to_16bit(gray)).save(tmp_path / "pillow16.png")  # Pillow's I;16 writer
    write_tiff(tmp_path / "16.tif", to_16bit(gray))
    write_tiff(tmp_path / "white0.tif", 65535 - to_16bit(gray), photometric="miniswhite")
    for name in ("8.png", "16.png", "pillow16.png", "16.tif", "white0.tif"):
        got = read_rgb8(tmp_path / name)
        assert got.shape == (9, 11, 3), name
        for c in range(3):
            np.testing.assert_array_equal(got[..., c], gray, err_msg=name)


def test_12bit_sensor_values_with_input_bits_12(tmp_path, rgb8, caplog):
    write_png16(tmp_path / "12.png", to_12bit(rgb8))
    write_tiff(tmp_path / "12.tif", to_12bit(rgb8))
    for name in ("12.png", "12.tif"):
        np.testing.assert_array_equal(read_rgb8(tmp_path / name, input_bits=12), rgb8)
        # read as full 16-bit they are 16 times too dark
        assert read_rgb8(tmp_path / name).max() <= 16
    # 8-bit files are read as they are, whatever --input_bits says
    Image.fromarray(rgb8).save(tmp_path / "8.png")
    np.testing.assert_array_equal(read_rgb8(tmp_path / "8.png", input_bits=12), rgb8)
    # values above 4095 are clipped to 255, with one warning naming the file
    write_png16(tmp_path / "over.png", np.array([[4095, 4096, 60000]], np.uint16))
    image_io._clip_warned.clear()
    with caplog.at_level(logging.WARNING, logger="data.image_io"):
        got = read_rgb8(tmp_path / "over.png", input_bits=12)
        read_rgb8(tmp_path / "over.png", input_bits=12)
    assert got[0, :, 0].tolist() == [255, 255, 255]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "over.png" in warnings[0] and "4095" in warnings[0]


def test_tiff_that_tifffile_cannot_decode_alone_is_read_by_pillow(tmp_path, rgb8):
    Image.fromarray(rgb8).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    Image.fromarray(to_16bit(rgb8[..., 0])).save(tmp_path / "lzw16.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_rgb8(tmp_path / "lzw.tif"), rgb8)
    np.testing.assert_array_equal(read_rgb8(tmp_path / "lzw16.tif")[..., 1], rgb8[..., 0])


def test_palette_and_rgba_8bit_files_become_rgb(tmp_path, rgb8):
    Image.fromarray(rgb8).convert("P").save(tmp_path / "p.png")
    want = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(read_rgb8(tmp_path / "p.png"), want)
    rgba = np.dstack([rgb8, np.full(rgb8.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb8(tmp_path / "a.png"), rgb8)


def test_masks_are_defect_where_any_channel_is_non_zero(tmp_path):
    mark = np.zeros((6, 8), bool)
    mark[1:3, 2:6] = True
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 200)), ("dark", (1, 0, 0))):
        rgb = np.zeros((6, 8, 3), np.uint8)
        rgb[mark] = colour
        Image.fromarray(rgb).save(tmp_path / f"{name}.png")
        np.testing.assert_array_equal(read_mask_file(tmp_path / f"{name}.png"), mark, name)
    write_png16(tmp_path / "16.png", mark.astype(np.uint16))  # value 1 of 65535
    write_tiff(tmp_path / "16.tif", mark.astype(np.uint16) * 65535)
    for name in ("16.png", "16.tif"):
        np.testing.assert_array_equal(read_mask_file(tmp_path / name), mark, name)
    # alpha is not a colour: an opaque black RGBA mask marks nothing
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    assert not read_mask_file(tmp_path / "opaque.png").any()


def test_unreadable_files_raise_one_line_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"no chunks here" * 5)
    (tmp_path / "short.png").write_bytes(b"\x89PNG")
    write_tiff(tmp_path / "float.tif", np.zeros((4, 4), np.float32))
    for name, text in (("junk.png", None), ("short.png", None), ("float.tif", "not supported")):
        with pytest.raises(ImageReadError, match=text) as err:
            read_rgb8(tmp_path / name)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("value, bits", [(0, 0), (None, 0), (8, 8), (12, 12), (16, 16),
                                         ("12", 12)])
def test_input_bits_values(value, bits):
    assert check_input_bits(value) == bits


@pytest.mark.parametrize("value", [7, 17, -1, 12.5, "twelve"])
def test_bad_input_bits(value):
    with pytest.raises(ConfigError, match="--input_bits"):
        check_input_bits(value)
