"""Gaussian density estimator (``gde``): one full-covariance Gaussian."""

import numpy as np
from sklearn.mixture import GaussianMixture

from detect.detector_base import Detector
from util.errors import ConfigError

class GDE(Detector):
    """Gaussian density estimator: one full-covariance Gaussian, score = -log p.

    Uses sklearn GaussianMixture(n_components=1, 'full', random_state=0) with
    sklearn's default reg_covar=1e-6 first, as the reference does; with fewer
    samples than dims that regulariser alone usually keeps the covariance
    positive definite. Only if the fit fails (Cholesky of a numerically
    singular covariance) is reg_covar raised in 10x steps (from at least
    1e-6) up to ``max_reg_covar``; the value used is kept in ``reg_covar_``
    so results stay reproducible and inspectable.
    """

    name = "gde"

    def __init__(self, reg_covar=1e-6, max_reg_covar=1e-1, random_state=0):
        self.reg_covar = float(reg_covar)
        self.max_reg_covar = float(max_reg_covar)
        self.random_state = random_state

    def _fit(self, x):
        x64 = np.ascontiguousarray(x, dtype=np.float64)
        reg = self.reg_covar
        while True:
            try:
                self.estimator_ = GaussianMixture(
                    n_components=1, covariance_type="full", reg_covar=reg,
                    random_state=self.random_state).fit(x64)
                break
            except ValueError as e:
                nxt = max(reg * 10, 1e-6)
                if nxt > self.max_reg_covar * (1 + 1e-9):
                    raise ConfigError(
                        f"gde: Gaussian fit failed even with reg_covar={reg:g} "
                        f"({e}); the training features are degenerate") from e
                reg = nxt
        self.reg_covar_ = reg

    def _score(self, x):
        return -self.estimator_.score_samples(np.asarray(x, dtype=np.float64))
