"""Maps + human data -> numbers: saliency metrics, per-unit region scores, aggregation.

Statistics (:mod:`probes.stats`), gaze agreement (:mod:`probes.gaze`) and figures
(:mod:`probes.figures`, :mod:`probes.attention_figures`) are imported on demand.
"""
from probes.aggregate import UnitScoreAccumulator
from probes.metrics import (auc_borji, auc_judd, cc, fmeasure, fmeasure_max, info_gain, kld, mae, nmm, nss, sauc,
                            sim)
from probes.regions import RegionScorer, unit_nmm, unit_region_nss

__all__ = [
    "RegionScorer", "UnitScoreAccumulator", "auc_borji", "auc_judd", "cc", "fmeasure", "fmeasure_max",
    "info_gain", "kld", "mae", "nmm", "nss", "sauc", "sim", "unit_nmm", "unit_region_nss",
]
