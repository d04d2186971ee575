"""Shared, seeded fixtures. No test reads ../shared or the network."""
import os

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def no_figure_leak():
    """Fail a test that leaves a matplotlib figure open."""
    import matplotlib.pyplot as plt

    plt.close("all")
    yield
    assert plt.get_fignums() == []


@pytest.fixture(autouse=True, scope="session")
def _region_cache(tmp_path_factory):
    """Fixation-cluster regions are cached in a temporary folder, never in the user's cache."""
    os.environ["SALIENCY_DISSECT_REGION_CACHE"] = str(tmp_path_factory.mktemp("region-cache"))
