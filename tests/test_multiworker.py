"""Two workers on 127.0.0.1 (MultiWorkerMirroredStrategy from TF_CONFIG) train a tiny
contrastive model: both end with identical weights, and the losses and weights match a
single process on the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "tests" / "multiworker_check.py"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))  # loopback only
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_loopback_workers_match_one_process(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    base = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    base.pop("TF_CONFIG", None)
    procs = []
    for index in range(2):
        env = dict(base, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                               "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, str(CHECK), str(tmp_path / f"w{index}.npz")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    single = subprocess.run([sys.executable, str(CHECK), str(tmp_path / "single.npz")], env=base,
                            capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]
    outs = [p.communicate(timeout=900) for p in procs]
    results = []
    for (stdout, stderr), proc in zip(outs, procs):
        lines = [l for l in stdout.splitlines() if l.startswith("{")]
        assert lines, stderr[-3000:]
        results.append(json.loads(lines[-1]))
    ref = json.loads(single.stdout.strip().splitlines()[-1])
    assert ref["replicas"] == 1 and all(r["replicas"] == 2 for r in results)
    w0, w1, ws = (np.load(tmp_path / f"{n}.npz") for n in ("w0", "w1", "single"))
    assert all(np.array_equal(w0[k], w1[k]) for k in w0)  # the workers agree exactly
    assert max(float(np.max(np.abs(w0[k] - ws[k]))) for k in w0) < 1e-6  # as tests/replica_check.py
    np.testing.assert_allclose(results[0]["losses"], ref["losses"], rtol=1e-6)
    assert len(ref["losses"]) == 3 and ref["losses"][0] != ref["losses"][-1]  # it trained
