"""A Gaussian per map position (``posgde``): where a part is always in the same place,
what is normal at one position is not normal at another.

For a fixed camera and fixture (a bottle seen from above, a board on a jig) a
feature can be normal in one corner and a defect in the middle. The detector
fits one full-covariance Gaussian to the training features of each map
position and scores a feature by its Mahalanobis distance to its position's
Gaussian. A few dozen training images give a covariance of rank below the
feature dimension, so each covariance is regularised by ``reg`` times its mean
variance on the diagonal. Parts that move or rotate between images break the
assumption: ``membank`` compares every feature with every training position.
"""

import numpy as np

from detect.detector_base import Detector
from util.errors import ConfigError

#: the diagonal added to each position's covariance, as a fraction of its mean variance
REGULARISATION = 0.01


class PositionGDE(Detector):
    """score = sqrt((x - mean_p)^T cov_p^-1 (x - mean_p)) at each position p."""

    name = "posgde"
    normalize = False
    positional = True

    def __init__(self, reg=REGULARISATION):
        if not reg > 0:
            raise ConfigError(f"posgde: reg must be > 0, got {reg!r}")
        self.reg = float(reg)

    def _fit(self, x):
        n, positions, dim = x.shape
        if n < 2:
            raise ConfigError(f"posgde needs at least 2 training images, got {n}")
        x64 = x.astype(np.float64)
        self.mean_ = x64.mean(axis=0)                        # [P, D]
        self.prec_chol_ = np.empty((positions, dim, dim))    # cov^-1 = L L^T
        eye = np.eye(dim)
        for p in range(positions):
            centred = x64[:, p] - self.mean_[p]
            cov = centred.T @ centred / (n - 1)
            cov += self.reg * max(float(np.trace(cov)) / dim, 1e-12) * eye
            # cov = C C^T  ->  cov^-1 = C^-T C^-1, so z = (x - mean) @ C^-T has |z|^2 the
            # squared Mahalanobis distance
            chol = np.linalg.cholesky(cov)
            self.prec_chol_[p] = np.linalg.solve(chol, eye).T

    def _score(self, x):
        z = np.einsum("npd,pde->npe", x.astype(np.float64) - self.mean_[None], self.prec_chol_)
        return np.sqrt(np.einsum("npe,npe->np", z, z))
