"""Maps + human data -> numbers: saliency metrics, per-unit region scores, aggregation.

Statistics (:mod:`probes.stats`) and gaze agreement (:mod:`probes.gaze`) are imported on demand.
``probes`` holds only the numbers: its figures are drawn by :mod:`dissect.reports`.
"""
from probes.aggregate import UnitScoreAccumulator
from probes.metrics import (auc_borji, auc_judd, cc, fmeasure, fmeasure_max, info_gain, kld, mae, nmm, nss, sauc,
                            sim)
from probes.regions import RegionScorer, unit_nmm, unit_region_nss

__all__ = [
    "RegionScorer", "UnitScoreAccumulator", "auc_borji", "auc_judd", "cc", "fmeasure", "fmeasure_max",
    "info_gain", "kld", "mae", "nmm", "nss", "sauc", "sim", "unit_nmm", "unit_region_nss",
]
