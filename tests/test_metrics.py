import numpy as np
import pytest

from util.errors import ConfigError
from detect.metrics import roc_auc, validate_labels


def test_label_convention_perfect_and_reversed():
    labels = np.array([0, 0, 0, 1, 1])
    assert roc_auc(labels, labels.astype(float)) == pytest.approx(100.0)
    assert roc_auc(labels, 1.0 - labels) == pytest.approx(0.0)
    assert roc_auc(labels, np.zeros(5)) == pytest.approx(50.0)


def test_hand_computed_value():
    # Pairs (outlier, inlier): outlier scores 0.8, 0.4; inlier 0.1, 0.5, 0.9.
    # 0.8 beats 0.1, 0.5; 0.4 beats 0.1 -> 3 of 6 pairs -> 50.
    labels = [0, 0, 0, 1, 1]
    scores = [0.1, 0.5, 0.9, 0.8, 0.4]
    assert roc_auc(labels, scores) == pytest.approx(50.0)
    # One tie counts half: outlier 0.5 vs inlier 0.5.
    assert roc_auc([0, 0, 1], [0.5, 0.1, 0.5]) == pytest.approx(75.0)


def test_returns_python_float_and_accepts_bool_labels():
    out = roc_auc(np.array([False, True]), np.array([0.0, 1.0], np.float32))
    assert type(out) is float and out == 100.0


def test_length_mismatch():
    with pytest.raises(ConfigError, match="length"):
        roc_auc([0, 1, 1], [0.1, 0.2])


def test_labels_not_binary():
    with pytest.raises(ConfigError, match="0 \\(inlier\\) or 1"):
        roc_auc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError):
        roc_auc(["a", "b"], [0.1, 0.2])


def test_single_class():
    with pytest.raises(ConfigError, match="both inliers"):
        roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="outliers \\(1\\)"):
        roc_auc([1, 1], [0.1, 0.2])
    with pytest.raises(ConfigError, match="empty"):
        roc_auc([], [])


def test_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="infinite"):
        roc_auc([0, 1], [0.1, np.inf])


def test_configerror_is_valueerror_and_validate_labels():
    assert issubclass(ConfigError, ValueError)
    np.testing.assert_array_equal(validate_labels([0.0, 1.0, 1.0], 3), [0, 1, 1])
    with pytest.raises(ConfigError):
        validate_labels([0, 1], 3)
