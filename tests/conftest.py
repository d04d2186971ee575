"""Shared, seeded fixtures. No test reads ../shared or the network."""
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
