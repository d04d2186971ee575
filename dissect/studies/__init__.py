"""Studies: what the toolkit measures, each a :class:`dissect.runner.Study` with its tables.

* :mod:`dissect.studies.dissection`: every unit against annotated regions (He et al. 2019);
* :mod:`dissect.studies.attention_gaze`: attention maps against human gaze (Lai et al. 2020,
  Ebrahimpour et al. 2019);
* :mod:`dissect.studies.evaluation`: saliency models' output maps against gaze or pop-out targets;
* :mod:`dissect.studies.robustness`: FGSM fooling rates;
* :mod:`dissect.studies.finetune`: He et al.'s fine-tuning study (train, then dissect, each setup);
* :mod:`dissect.studies.run_statistics`: statistics and figures of a finished dissection.

Importing this package registers every study with :mod:`dissect.runner.registry`, so ``merge``
can rebuild any of them from shard folders.
"""
from dissect.studies import attention_gaze, dissection, evaluation, robustness  # noqa: F401  (registers them)

__all__ = ["attention_gaze", "dissection", "evaluation", "robustness"]
