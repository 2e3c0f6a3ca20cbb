import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.svm import OneClassSVM

from detect import detector_base as D
from detect.detector_base import gamma_rule, l2_normalize
from detect.detectors import (DETECTORS, GDE, KDE, OCSVM_Linear, OCSVM_RBF, OneNN,
                              evaluate_detectors, make_detector, score_detectors,
                              subsample_rows)
from util.errors import ConfigError


def _data(n_train=7, n_test=5, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_train, dim)).astype(np.float32),
            rng.standard_normal((n_test, dim)).astype(np.float32))


def _np_normalize(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sqdist(a, b):
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def _toy(seed=0, n_train=60, n_in=20, n_out=20, dim=8):
    """Inliers tightly clustered around +mu, outliers around -mu."""
    rng = np.random.default_rng(seed)
    mu = np.full(dim, 3.0)
    train = mu + 0.1 * rng.standard_normal((n_train, dim))
    test = np.concatenate([mu + 0.1 * rng.standard_normal((n_in, dim)),
                           -mu + 0.1 * rng.standard_normal((n_out, dim))])
    labels = np.r_[np.zeros(n_in, int), np.ones(n_out, int)]
    return train.astype(np.float32), test.astype(np.float32), labels


# --------------------------------------------------------------- helpers

def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]])
    y = l2_normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0, 0], [1, 0]], rtol=1e-6)


def test_gamma_rule_hand_formula():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 6.0, 8.0]])
    mean = x.sum() / x.size
    var = ((x - mean) ** 2).sum() / x.size
    g = gamma_rule(x)
    assert type(g) is float
    assert g == pytest.approx(10.0 / (var * 3))


def test_gamma_rule_zero_variance():
    with pytest.raises(ConfigError, match="variance"):
        gamma_rule(np.ones((4, 3)))


# --------------------------------------------------------------- KDE

def _kde_reference(train, test, gamma):
    d2 = _sqdist(_np_normalize(test), _np_normalize(train))
    return -logsumexp(-gamma * d2, axis=1) / gamma


@pytest.mark.parametrize("chunks", [{}, {"chunk_size": 2, "train_chunk_size": 3},
                                    {"chunk_size": 1, "train_chunk_size": 1}])
def test_kde_matches_direct_formula(chunks):
    train, test = _data()
    det = KDE(**chunks).fit(train)
    gamma = gamma_rule(_np_normalize(train))
    assert det.gamma_ == pytest.approx(gamma, rel=1e-5)
    # Tiny data and moderate gamma: the naive formula is fine here.
    d2 = _sqdist(_np_normalize(test), _np_normalize(train))
    naive = -np.log(np.exp(-gamma * d2).sum(1)) / gamma
    got = det.score(test)
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, naive, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunks", [{}, {"chunk_size": 2, "train_chunk_size": 2}])
def test_kde_large_gamma_no_underflow(chunks):
    train, test = _data(seed=1)
    gamma = 1e4
    d2 = _sqdist(_np_normalize(test), _np_normalize(train))
    with np.errstate(divide="ignore"):
        naive = -np.log(np.exp(-gamma * d2).sum(1)) / gamma
    assert np.isinf(naive).all()  # the naive formula underflows to log(0)
    got = KDE(gamma=gamma, **chunks).fit(train).score(test)
    ref = _kde_reference(train, test, gamma)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    # With a huge gamma the KDE score tends to the nearest squared distance.
    np.testing.assert_allclose(got, d2.min(1), atol=1e-3)


def test_kde_bad_chunk_size():
    with pytest.raises(ConfigError, match="chunk_size"):
        KDE(chunk_size=0)
    with pytest.raises(ConfigError, match="train_chunk_size"):
        make_detector("kde", train_chunk_size=2.5)


# --------------------------------------------------------------- 1-NN

@pytest.mark.parametrize("chunks", [{}, {"chunk_size": 3, "train_chunk_size": 2}])
def test_one_nn_brute_force(chunks):
    train, test = _data(n_train=11, n_test=9, dim=6, seed=2)
    test[0] = 5 * train[3]  # same direction as a training point -> score 0
    ref = np.array([1 - max(np.dot(t, y) / np.linalg.norm(t) / np.linalg.norm(y)
                            for y in train.astype(np.float64))
                    for t in test.astype(np.float64)])
    got = OneNN(**chunks).fit(train).score(test)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got[0] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------- GDE

def test_gde_matches_scipy_logpdf():
    train, test = _data(n_train=400, n_test=30, dim=3, seed=3)
    train[:, 0] += 2.0  # not centred, so the normalised data is anisotropic
    det = GDE().fit(train)
    xn = _np_normalize(train)
    cov = np.cov(xn, rowvar=False, bias=True) + 1e-6 * np.eye(3)
    ref = -multivariate_normal(xn.mean(0), cov).logpdf(_np_normalize(test))
    np.testing.assert_allclose(det.score(test), ref, rtol=1e-4, atol=1e-4)
    assert det.estimator_.random_state == 0 and det.reg_covar_ == 1e-6


def test_gde_singular_covariance_raises_reg_covar():
    rng = np.random.default_rng(4)
    x = np.zeros((6, 10), np.float32)
    x[:, :3] = rng.standard_normal((6, 3))  # 7 dims identically zero
    det = GDE(reg_covar=0.0).fit(x)
    assert det.reg_covar_ >= 1e-6
    assert np.isfinite(det.score(x)).all()


# --------------------------------------------------------------- OC-SVMs

def test_ocsvm_rbf_gamma_rule_and_ranking():
    rng = np.random.default_rng(5)
    train = np.abs(rng.standard_normal((80, 6))).astype(np.float32) + 2.0
    test = np.concatenate([train[:5] + 0.01, -train[:1]])  # last: outlier
    det = OCSVM_RBF().fit(train)
    est = det.estimator_
    assert est.gamma == pytest.approx(gamma_rule(l2_normalize(train)))
    assert est.kernel == "rbf" and est.nu == 0.5
    s = det.score(test)
    assert s[-1] > s[:-1].max()
    # BLAS scoring equals sklearn's own score_samples.
    ref = -est.score_samples(l2_normalize(test).astype(np.float64))
    np.testing.assert_allclose(s, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(OCSVM_RBF(fast_score=False).fit(train).score(test),
                               ref, rtol=1e-10, atol=1e-12)


def test_ocsvm_linear_uses_raw_features():
    train, test = _data(n_train=50, n_test=10, dim=5, seed=6)
    train *= 7.0
    det = OCSVM_Linear().fit(train)
    assert OCSVM_Linear.normalize is False and det.estimator_.kernel == "linear"
    ref_est = OneClassSVM(kernel="linear", nu=0.5).fit(train.astype(np.float64))
    ref = -ref_est.score_samples(test.astype(np.float64))
    np.testing.assert_allclose(det.score(test), ref, rtol=1e-8, atol=1e-10)
    # Support vectors are raw training rows, not unit vectors.
    norms = np.linalg.norm(det.estimator_.support_vectors_, axis=1)
    assert norms.max() > 2.0


# --------------------------------------------------------------- all

def test_registry_order_and_make_detector():
    assert list(DETECTORS) == ["kocsvm", "locsvm", "kde", "gde", "auc", "membank", "posgde"]
    for name, cls in DETECTORS.items():
        det = make_detector(name)
        assert isinstance(det, cls) and isinstance(det, D.Detector)
        assert det.name == name
    assert [DETECTORS[n].normalize for n in DETECTORS] == [True, False, True,
                                                            True, True, False, False]
    assert [n for n in DETECTORS if DETECTORS[n].positional] == ["posgde"]
    with pytest.raises(ConfigError, match="kocsvm, locsvm, kde, gde, auc, membank, posgde"):
        make_detector("knn")


# the positional detector takes maps: tests/test_map_detectors.py
SINGLE_FEATURE = [n for n, cls in DETECTORS.items() if not cls.positional]


@pytest.mark.parametrize("name", SINGLE_FEATURE)
def test_higher_is_more_anomalous(name):
    train, test, labels = _toy()
    s = make_detector(name).fit(train).score(test)
    assert s.dtype == np.float64 and s.shape == (40,)
    assert s[labels == 1].min() > s[labels == 0].max()


def test_input_validation():
    train, test = _data()
    det = KDE()
    with pytest.raises(RuntimeError, match="before fit"):
        det.score(test)
    bad = train.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        det.fit(bad)
    det.fit(train)
    with pytest.raises(ConfigError, match="dim"):
        det.score(test[:, :3])
    with pytest.raises(ConfigError, match="2-D"):
        det.score(test[0])
    test_inf = test.copy()
    test_inf[0, 0] = np.inf
    with pytest.raises(ConfigError, match="non-finite"):
        det.score(test_inf)


def test_evaluate_detectors_runs_every_single_feature_detector():
    train, test, labels = _toy()
    aucs = evaluate_detectors(train, test, labels)
    assert list(aucs) == SINGLE_FEATURE
    for v in aucs.values():
        assert type(v) is float and 0.0 <= v <= 100.0
        assert v == pytest.approx(100.0)


def test_evaluate_detectors_respects_max_train():
    train, test, labels = _toy(n_train=100)
    msgs = []
    aucs = evaluate_detectors(train, test, labels, names="kde,auc",
                              max_train=30, progress=msgs.append)
    assert list(aucs) == ["kde", "auc"]
    assert any("on 30 train" in m for m in msgs)
    # The subsample is fixed by the seed and made of original rows.
    a = subsample_rows(train, 30, seed=0)
    assert a.shape == (30, 8)
    np.testing.assert_array_equal(a, subsample_rows(train, 30, seed=0))
    assert not np.array_equal(a, subsample_rows(train, 30, seed=1))
    rows = {r.tobytes() for r in train}
    assert all(r.tobytes() in rows for r in a)
    assert subsample_rows(train, 1000) is train


def test_score_detectors_matches_fitted_detector():
    train, test, _ = _toy()
    scores = score_detectors(train, test, names=["gde"], max_train=None)
    np.testing.assert_allclose(scores["gde"], GDE().fit(train).score(test))


def test_evaluate_detectors_errors():
    train, test, labels = _toy()
    with pytest.raises(ConfigError, match="valid names"):
        evaluate_detectors(train, test, labels, names=["kde", "nope"])
    with pytest.raises(ConfigError, match="both inliers"):
        evaluate_detectors(train, test, np.zeros(len(test), int))
    with pytest.raises(ConfigError, match="length"):
        evaluate_detectors(train, test, labels[:-1])
    with pytest.raises(ConfigError, match="dim"):
        evaluate_detectors(train, test[:, :4], labels)
    with pytest.raises(ConfigError, match="max_train"):
        evaluate_detectors(train, test, labels, max_train=0)
    bad = test.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        evaluate_detectors(train, bad, labels)
