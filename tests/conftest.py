"""Shared test settings: few threads, quiet progress."""
import os

import pytest
import torch

torch.set_num_threads(1)  # small models: one thread is fastest and immune to oversubscription
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tmp_runs(tmp_path):
    """A fresh run directory."""
    return tmp_path / "runs"
