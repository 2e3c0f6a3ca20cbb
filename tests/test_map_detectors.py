"""The detectors of feature maps: the greedy coreset, the memory bank and the Gaussian per
position, against direct computations, and the same scores as TensorFlow graphs."""

import numpy as np
import pytest

from detect.coreset import greedy_coreset
from detect.detectors import DETECTORS, make_detector, score_detectors
from detect.memory_bank import MemoryBank
from detect.position_gde import PositionGDE
from util.errors import ConfigError


def _clusters(rng, centres, per=200, spread=0.01):
    return np.concatenate([c + spread * rng.standard_normal((per, len(c)))
                           for c in centres]).astype(np.float32)


def test_coreset_covers_every_cluster_before_adding_a_second_point_to_one():
    """Greedy k-center adds the row farthest from those chosen: with k = the number of
    well separated clusters, one row of each (a random subsample would miss the small
    ones), and every row ends within the clusters' spread of the coreset."""
    rng = np.random.default_rng(0)
    centres = 10 * rng.standard_normal((6, 16))
    x = np.concatenate([_clusters(rng, centres[:5], per=400), _clusters(rng, centres[5:], per=3)])
    picked = greedy_coreset(x, 6, seed=1)
    labels = np.linalg.norm(x[picked][:, None] - centres[None], axis=-1).argmin(1)
    assert sorted(labels) == list(range(6))
    far = np.sqrt(((x[:, None] - x[picked][None]) ** 2).sum(-1)).min(1).max()
    assert far < 0.2


def test_coreset_keeps_everything_when_k_is_large_and_refuses_an_empty_one():
    x = np.random.default_rng(0).random((10, 3), dtype=np.float32)
    np.testing.assert_array_equal(greedy_coreset(x, 10), np.arange(10))
    np.testing.assert_array_equal(greedy_coreset(x, 50), np.arange(10))
    with pytest.raises(ConfigError):
        greedy_coreset(x, 0)


def test_memory_bank_scores_the_distance_to_the_nearest_bank_row():
    rng = np.random.default_rng(1)
    train = rng.standard_normal((3000, 24)).astype(np.float32) * 3
    test = rng.standard_normal((500, 24)).astype(np.float32) * 3
    det = MemoryBank(bank_size=256, chunk_size=128, train_chunk_size=100).fit(train)
    assert det.bank_.shape == (256, 24)
    # the bank is made of training rows
    assert np.isin(det.bank_.view([("", det.bank_.dtype)] * 24),
                   train.view([("", train.dtype)] * 24)).all()
    direct = np.sqrt(((test[:, None].astype(np.float64) - det.bank_[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(det.score(test), direct, rtol=1e-4, atol=1e-4)
    # without normalisation: a scaled copy of a bank row is far from it
    assert det.score(det.bank_[:1] * 2)[0] == pytest.approx(np.linalg.norm(det.bank_[0]),
                                                           rel=1e-4)


def test_memory_bank_keeps_every_row_of_a_small_training_set():
    rng = np.random.default_rng(2)
    train = rng.standard_normal((40, 8)).astype(np.float32)
    det = MemoryBank(bank_size=100).fit(train)
    assert det.bank_.shape == (40, 8)
    np.testing.assert_allclose(det.score(train), 0.0, atol=2e-3)


def test_position_gde_is_the_mahalanobis_distance_to_each_positions_gaussian():
    rng = np.random.default_rng(3)
    n, positions, dim = 30, 5, 4
    scale = np.arange(1, positions + 1)[None, :, None]
    train = (rng.standard_normal((n, positions, dim)) * scale + scale).astype(np.float32)
    test = (rng.standard_normal((7, positions, dim)) * 2).astype(np.float32)
    det = PositionGDE(reg=0.05).fit(train)
    got = det.score(test)
    assert got.shape == (7, positions)
    for p in range(positions):
        x = train[:, p].astype(np.float64)
        cov = np.cov(x, rowvar=False)
        cov += 0.05 * np.trace(cov) / dim * np.eye(dim)
        d = test[:, p] - x.mean(0)
        want = np.sqrt(np.einsum("nd,de,ne->n", d, np.linalg.inv(cov), d))
        np.testing.assert_allclose(got[:, p], want, rtol=1e-4)


def test_position_gde_takes_maps_and_refuses_other_shapes():
    det = PositionGDE()
    with pytest.raises(ConfigError, match="3-D"):
        det.fit(np.zeros((10, 4), np.float32))
    det.fit(np.random.default_rng(0).random((6, 3, 2), dtype=np.float32))
    with pytest.raises(ConfigError, match="positions"):
        det.score(np.zeros((2, 4, 2), np.float32))
    with pytest.raises(ConfigError, match="at least 2"):
        PositionGDE().fit(np.zeros((1, 3, 2), np.float32))


def test_the_default_detector_list_leaves_the_positional_one_out():
    """score_detectors' default (every detector) runs on rows; posgde needs maps."""
    assert DETECTORS["posgde"].positional and not DETECTORS["membank"].positional
    rng = np.random.default_rng(4)
    out = score_detectors(rng.random((60, 5)), rng.random((9, 5)))
    assert "posgde" not in out and "membank" in out


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_graph_scores_equal_the_detectors(name):
    """Each detector's graph_score computes its numpy scores from its export_params (what
    the SavedModel, ONNX and OpenVINO graphs run)."""
    import tensorflow as tf

    shape = (25, 6, 12) if DETECTORS[name].positional else (300, 12)
    rng = np.random.default_rng(5)
    train = rng.standard_normal(shape).astype(np.float32)
    test = rng.standard_normal((8,) + shape[1:]).astype(np.float32) * 1.5
    det = make_detector(name, **({"bank_size": 64} if name == "membank" else {})).fit(train)
    params = {k: tf.constant(v) for k, v in det.export_params().items()}
    got = DETECTORS[name].graph_score(params, tf.constant(test)).numpy()
    np.testing.assert_allclose(got, det.score(test), rtol=1e-4, atol=1e-4)
