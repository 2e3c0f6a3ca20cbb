"""The map mode's features and maps against direct computations on small inputs: the local
feature map of a trunk's stages, the raw-pixel cells, and the smoothed anomaly map."""

import numpy as np
import pytest


def _bilinear(x, out):
    """Bilinear resize of [h, w, C] to [out, out, C] with half-pixel centres, written out."""
    def weights(n_in):
        src = np.clip((np.arange(out) + 0.5) * n_in / out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    r0, r1, fr = weights(x.shape[0])
    c0, c1, fc = weights(x.shape[1])
    rows = x[r0] * (1 - fr)[:, None, None] + x[r1] * fr[:, None, None]
    return rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]


def _window_mean(x, k):
    """Mean over the k x k window around each cell of [h, w, C], cells outside not counted."""
    h, w, _ = x.shape
    r = k // 2
    out = np.empty_like(x)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean(axis=(0, 1))
    return out


@pytest.fixture(scope="module")
def backbone():
    import keras

    from model.resnet import build_resnet

    keras.utils.set_random_seed(0)
    return build_resnet("ResNet10", 0.125, (96, 96, 3))


def test_feature_map_is_the_window_mean_of_each_stage_on_the_finest_grid(backbone):
    """Stages 2 and 3 of a 96 px image: 12 x 12 and 6 x 6 cells, each averaged over its
    3 x 3 neighbourhood, stage 3 resized bilinearly to 12 x 12, channels concatenated."""
    import keras

    from model.feature_maps import FeatureMapper, stage_output_names

    images = np.random.default_rng(0).random((2, 96, 96, 3)).astype(np.float32)
    got = FeatureMapper(backbone, (2, 3), 3)(images).numpy()
    names = stage_output_names(backbone, (2, 3))
    assert names == ["stage2_block1_out", "stage3_block1_out"]
    s2, s3 = (keras.Model(backbone.inputs[0], backbone.get_layer(n).output)(images).numpy()
              for n in names)
    assert s2.shape[1:3] == (12, 12) and s3.shape[1:3] == (6, 6)
    for b in range(2):
        want = np.concatenate([_window_mean(s2[b], 3), _bilinear(_window_mean(s3[b], 3), 12)],
                              axis=-1)
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-5)
    assert got.shape == (2, 12, 12, s2.shape[-1] + s3.shape[-1])


def test_one_stage_without_a_window_is_the_stage_itself(backbone):
    import keras

    from model.feature_maps import FeatureMapper

    images = np.random.default_rng(1).random((1, 96, 96, 3)).astype(np.float32)
    got = FeatureMapper(backbone, (3,), 1)(images).numpy()
    want = keras.Model(backbone.inputs[0],
                       backbone.get_layer("stage3_block1_out").output)(images).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_raw_pixel_cells_are_the_pixels_of_each_cell():
    from model.feature_maps import PixelCellMapper

    images = np.random.default_rng(2).random((1, 32, 32, 3)).astype(np.float32)
    got = PixelCellMapper(8, neighbourhood=1)(images).numpy()
    assert got.shape == (1, 4, 4, 192)
    np.testing.assert_allclose(got[0, 1, 2], images[0, 8:16, 16:24].reshape(-1), rtol=1e-6)


def test_anomaly_map_is_the_upsampled_cell_map_blurred_over_the_image_only():
    """smooth_upsample = bilinear upsampling, then a Gaussian blur divided by the blur of
    an all-ones image: a direct 2-D convolution with zero padding, normalised."""
    from scipy.ndimage import convolve

    from detect.localization import gaussian_taps, map_pixels, smooth_upsample

    rng = np.random.default_rng(3)
    cells = rng.random((2, 8, 8)).astype(np.float32) * 10
    size, sigma = 64, 2.0
    got = smooth_upsample(cells, size, sigma).numpy()
    taps = gaussian_taps(sigma).astype(np.float64)
    kernel = np.outer(taps, taps)
    weight = convolve(np.ones((size, size)), kernel, mode="constant")
    for b in range(2):
        up = _bilinear(cells[b][..., None].astype(np.float64), size)[..., 0]
        want = convolve(up, kernel, mode="constant") / weight
        np.testing.assert_allclose(got[b], want, rtol=1e-4, atol=1e-4)
    # a constant map stays constant up to the border (scores are distances, not zero-based)
    flat = map_pixels(np.full((1, 8, 8), 7.0, np.float32), 256)
    np.testing.assert_allclose(flat, 7.0, rtol=1e-5)
