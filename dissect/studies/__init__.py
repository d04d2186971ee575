"""Studies: what the toolkit measures, each a :class:`dissect.runner.Study` with its tables.

* :mod:`dissect.studies.dissection`: every unit against annotated regions (He et al. 2019);
* :mod:`dissect.studies.attention_gaze`: attention maps against human gaze (Lai et al. 2020,
  Ebrahimpour et al. 2019);
* :mod:`dissect.studies.evaluation`: saliency models' output maps against gaze or pop-out targets;
* :mod:`dissect.studies.robustness`: FGSM fooling rates;
* :mod:`dissect.studies.finetune`: He et al.'s fine-tuning study (train, then dissect, each setup);
* :mod:`dissect.studies.run_statistics`: statistics and figures of a finished dissection.

A study registers itself with :mod:`dissect.runner.registry` when its module is imported;
:func:`register_all` imports every one, so ``merge`` can rebuild any of them from shard folders.
"""
import importlib

__all__ = ["STUDY_MODULES", "register_all"]

#: The modules that define the registered studies.
STUDY_MODULES = ("dissect.studies.dissection", "dissect.studies.attention_gaze", "dissect.studies.evaluation",
                 "dissect.studies.robustness")


def register_all() -> None:
    """Import every study module (each registers its study)."""
    for name in STUDY_MODULES:
        importlib.import_module(name)
