"""Shared test setup: TensorFlow's C++ logging quiet in every test process, one finished
tiny run for the test modules that only read it, and the grouping pytest-xdist uses.

Under pytest-xdist (``-n 2 --dist loadgroup``, pytest.ini) each test module runs on
one worker, so its module-scoped fixtures (a trained run, a converted export) are built
once; the modules that use the session's ``tiny_run`` share one group, so that run is
trained once.
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One op thread per TensorFlow process: the two pytest-xdist workers (and the processes
# they start) share two cores, and the tests' tiny models gain nothing from more threads
# but lose to threads contending for the cores (docs/performance.md, "The test suite").
# Set before any test module imports TensorFlow; a value in the environment wins.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

#: every detector, so that each module reading the run finds the scores it checks
TINY_RUN_DETECTORS = "--detectors=kocsvm,locsvm,kde,gde,auc"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tests.entry_point.TINY_RUN with every detector and its KDE export. Tests
    read it; a test that writes into a run works on a copy (shutil.copytree)."""
    from tests.entry_point import finished_tiny_run

    return finished_tiny_run(tmp_path_factory.mktemp("tiny") / "run", TINY_RUN_DETECTORS)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    sharing = {item.module.__name__ for item in items if "tiny_run" in item.fixturenames}
    for item in items:
        name = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("tiny_run" if name in sharing else name))
