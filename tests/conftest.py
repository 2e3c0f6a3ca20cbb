"""Shared test setup: keep TensorFlow's C++ logging quiet in every test process."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
