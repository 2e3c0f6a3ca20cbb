"""Time and memory benchmark for one stage-2 detector on synthetic features.

Used to check the detectors stay within budget on realistic sizes (e.g. KDE
at 20,000 train x 10,000 test x 512 dims). Peak memory is the largest RSS
increase over the baseline taken after the data is generated, sampled every
10 ms by a background psutil thread (BLAS and libsvm release the GIL, so the
sampler keeps running during the heavy calls).

    python -m bench.detectors kde 20000 10000 512
"""

import sys
import threading
import time

import numpy as np
import psutil

from detect.detectors import DETECTORS, make_detector
from util.cli import ArgumentParser, script_main
from util.errors import ConfigError


class _RssSampler(threading.Thread):
    """Background thread recording the max RSS of this process."""

    def __init__(self, interval=0.01):
        super().__init__(daemon=True)
        self.interval = interval
        self._proc = psutil.Process()
        self._stop_evt = threading.Event()
        self.peak = self._proc.memory_info().rss

    def run(self):
        while not self._stop_evt.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop_evt.wait(self.interval)

    def stop(self):
        self._stop_evt.set()
        self.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return self.peak


def synthetic_features(n_train, n_test, dim, seed=0):
    """ReLU-like non-negative float32 features (like pooled CNN outputs)."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(dim).astype(np.float32)
    train = np.maximum(centre + rng.standard_normal((n_train, dim),
                                                    dtype=np.float32), 0)
    test = np.maximum(centre + 1.2 * rng.standard_normal((n_test, dim),
                                                         dtype=np.float32), 0)
    return train, test


def benchmark_detector(name, n_train, n_test, dim, seed=0, **detector_kw):
    """Fit + score one detector; returns dict(fit_s, score_s, peak_mb).

    peak_mb is the max RSS increase (MiB) during fit+score over the RSS after
    the synthetic features were created.
    """
    train, test = synthetic_features(n_train, n_test, dim, seed)
    det = make_detector(name, **detector_kw)
    sampler = _RssSampler()
    base = sampler.peak
    sampler.start()
    t0 = time.perf_counter()
    det.fit(train)
    t1 = time.perf_counter()
    scores = det.score(test)
    t2 = time.perf_counter()
    peak = sampler.stop()
    assert scores.shape == (n_test,) and np.isfinite(scores).all()
    return {"fit_s": t1 - t0, "score_s": t2 - t1,
            "peak_mb": (peak - base) / 2**20}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(DETECTORS))
    for size in ("n_train", "n_test", "dim"):
        p.add_argument(size, type=int)
    args = p.parse_args(argv)
    for size in ("n_train", "n_test", "dim"):
        if getattr(args, size) <= 0:
            raise ConfigError(f"{size.upper()}={getattr(args, size)} must be positive")
    return args


@script_main
def main(argv=None):
    args = parse_args(argv)
    name, n_train, n_test, dim = args.name, args.n_train, args.n_test, args.dim
    r = benchmark_detector(name, n_train, n_test, dim)
    print(f"{name} {n_train}x{n_test}x{dim}: fit {r['fit_s']:.2f}s "
          f"score {r['score_s']:.2f}s peak +{r['peak_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
