"""Registry of evaluators: how a run's network sees images and how stage 2 scores it.

A new evaluation protocol is one module with a detect.evaluator_base.Evaluator
subclass plus one ``EvaluatorSpec`` line here. A spec says what the rest of
the code asks about an evaluator before anything is loaded: the flags its
constructor takes and the flags that apply to it (validation refuses any other
given flag), and whether it makes anomaly maps or scores the cells of feature
maps. The class is named as ``module:Class`` and imported only when a run
builds it (the evaluators need TensorFlow), so choosing and validating need
none. ``choose_evaluator`` is the one place that looks at the dataset's
layout.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from detect.evaluation import EvalSettings

if TYPE_CHECKING:
    from detect.evaluator_base import Evaluator

#: flags every evaluator of MVTec-layout data or of feature maps takes
_DEFECT_FLAGS = ("mvtec_mode",)
_MAP_FLAGS = ("mvtec_image_size", "mvtec_heatmaps")


@dataclasses.dataclass(frozen=True)
class EvaluatorSpec:
    """What the code asks about an evaluator before it is built: ``options``, the run's
    flags its constructor takes by keyword; ``flags``, the other flags that apply to it;
    ``maps``: it makes anomaly maps (pixel metrics, heat maps, map exports);
    ``feature_maps``: it scores the cells of whole-image feature maps, which the
    map-only detectors and proxy tasks need."""

    name: str
    implementation: str
    options: tuple = ()
    flags: tuple = ()
    maps: bool = False
    feature_maps: bool = False

    def applies(self, flag: str) -> bool:
        """Whether a run of this evaluator uses ``flag``."""
        return flag in self.options or flag in self.flags

    def load(self) -> type:
        module, cls = self.implementation.split(":")
        return getattr(importlib.import_module(module), cls)

    def build(self, settings: EvalSettings, **options) -> Evaluator:
        """The evaluator of ``settings`` and the values of its ``options`` flags."""
        missing = sorted(set(self.options) - set(options))
        if missing:
            raise TypeError(f"the {self.name} evaluator needs {', '.join(missing)}")
        return self.load()(settings, **{k: options[k] for k in self.options})


EVALUATORS = {spec.name: spec for spec in (
    EvaluatorSpec("image", "detect.image_evaluator:ImageEvaluator"),
    EvaluatorSpec("defect_image", "detect.image_evaluator:DefectImageEvaluator",
                  flags=_DEFECT_FLAGS),
    EvaluatorSpec("patch", "detect.patch_evaluator:PatchEvaluator",
                  options=("patch_size", "patch_stride", "patches_per_image", "mvtec_features",
                           "patch_features"),
                  flags=_DEFECT_FLAGS + _MAP_FLAGS, maps=True),
    EvaluatorSpec("map", "detect.map_evaluator:MapEvaluator",
                  options=("map_stages", "map_neighbourhood", "bank_size", "map_train_crop"),
                  flags=_DEFECT_FLAGS + _MAP_FLAGS + ("mvtec_aspect",), maps=True, feature_maps=True),
)}


def choose_evaluator(defect_layout: bool, mvtec_mode: str,
                     image_files: bool = False) -> EvaluatorSpec:
    """The run's evaluator: MVTec-layout data (good/defect test folders) is scored by
    patches, by the cells of whole-image feature maps (``--mvtec_mode=map``) or, with
    ``--mvtec_mode=image``, as whole images. Other folders of image files are scored by
    feature maps with ``--mvtec_mode=map`` (image metrics only: they have no masks);
    everything else as images."""
    if not defect_layout:
        name = "map" if image_files and mvtec_mode == "map" else "image"
    else:
        name = {"patch": "patch", "map": "map"}.get(mvtec_mode, "defect_image")
    return EVALUATORS[name]
