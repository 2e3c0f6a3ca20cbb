"""Greedy coreset (k-center) selection: a small set of rows that covers all the others.

A memory bank of every training feature of a dense map (hundreds of thousands
of rows) is too slow to search at scoring time; a random subsample leaves
rare normal patterns out, which then look anomalous. The greedy k-center
choice adds, one at a time, the row farthest from the rows chosen so far, so
every training row ends close to some bank row (its distance to the bank is
the largest such gap, and it shrinks as the bank grows). The distances are
measured on a random projection of the rows to ``projection`` dimensions
(Johnson-Lindenstrauss: distances are kept up to a small factor) and among at
most ``candidates`` rows drawn at random, which bounds the cost at
``k * candidates * projection`` multiply-adds. Pure numpy.
"""

import numpy as np
from threadpoolctl import threadpool_limits

from util.errors import ConfigError

#: rows the greedy search runs over (a random draw of them when there are more)
CANDIDATES = 100_000
#: dimensions of the random projection the distances are measured in
PROJECTION = 32


def greedy_coreset(x: np.ndarray, k: int, seed: int = 0, candidates: int = CANDIDATES,
                   projection: int = PROJECTION) -> np.ndarray:
    """Sorted indices of ``k`` rows of float ``x`` [n, d] chosen by greedy k-center
    (all rows when ``k >= n``)."""
    x = np.asarray(x, np.float32)
    n = len(x)
    k = int(k)
    if k <= 0:
        raise ConfigError(f"a coreset needs at least one row, got k={k}")
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng([int(seed), 17])
    pool = np.arange(n)
    if n > candidates:
        pool = np.sort(rng.choice(n, int(candidates), replace=False))
    p = x[pool]
    if p.shape[1] > projection:
        p = p @ (rng.standard_normal((p.shape[1], projection)).astype(np.float32)
                 / np.float32(np.sqrt(projection)))
    with threadpool_limits(1):  # thousands of small products: threads would only wait
        return np.sort(pool[_greedy(np.ascontiguousarray(p), k, int(rng.integers(len(p))))])


def _greedy(p, k, first):
    """Indices into ``p`` of ``k`` rows chosen greedily, starting from row ``first``."""
    norms = np.einsum("ij,ij->i", p, p)
    chosen = np.empty(k, np.int64)
    nearest = np.full(len(p), np.inf, np.float32)  # squared distance to the nearest chosen row
    scratch = np.empty_like(nearest)
    j = first
    for i in range(k):
        chosen[i] = j
        # ||p - p_j||^2 = ||p||^2 + ||p_j||^2 - 2 p.p_j: one matrix-vector product per row
        np.dot(p, p[j], out=scratch)
        scratch *= -2.0
        scratch += norms
        scratch += norms[j]
        np.minimum(nearest, scratch, out=nearest)
        j = int(np.argmax(nearest))
    return chosen
