"""Versions of the libraries a run used, recorded in summary.json and export metadata."""

import platform


def library_versions():
    """{library: version} of Python, TensorFlow, Keras, NumPy and scikit-learn."""
    import keras
    import numpy as np
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}
