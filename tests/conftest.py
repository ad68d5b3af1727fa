"""Shared test settings: few threads, quiet progress."""
import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tmp_runs(tmp_path):
    """A fresh run directory."""
    return tmp_path / "runs"
