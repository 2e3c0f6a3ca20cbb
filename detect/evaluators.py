"""Registry of evaluators: how a run's network sees images and how stage 2 scores it.

A new evaluation protocol is one module with an evaluator class (the
interface of detect/image_evaluator.py: ``steps_per_epoch``,
``train_dataset``, ``network_view``, ``periodic``, ``final``) plus one line
here. Entries name the class as ``module:Class``, imported only when a run
builds it, so choosing one needs no TensorFlow. ``choose_evaluator`` is the
one place that looks at the dataset's layout.
"""

import importlib

EVALUATORS = {
    "image": "detect.image_evaluator:ImageEvaluator",
    "defect_image": "detect.image_evaluator:DefectImageEvaluator",
    "patch": "detect.patch_evaluator:PatchEvaluator",
    "map": "detect.map_evaluator:MapEvaluator",
}


def choose_evaluator(defect_layout, mvtec_mode, image_files=False):
    """The evaluator's name: MVTec-layout data (good/defect test folders) is scored by
    patches, by the cells of whole-image feature maps (``--mvtec_mode=map``) or, with
    ``--mvtec_mode=image``, as whole images. Other folders of image files are scored by
    feature maps with ``--mvtec_mode=map`` (image metrics only: they have no masks);
    everything else as images."""
    if not defect_layout:
        return "map" if image_files and mvtec_mode == "map" else "image"
    return {"patch": "patch", "map": "map"}.get(mvtec_mode, "defect_image")


def evaluator_class(name):
    module, cls = EVALUATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_evaluator(name, settings, **options):
    """An evaluator of ``settings`` (detect.evaluation.EvalSettings) and its own options."""
    return evaluator_class(name)(settings, **options)
