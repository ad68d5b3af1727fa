"""What the CLI tests share: the runner and a tiny spheres training run's overrides."""
from __future__ import annotations

from typer.testing import CliRunner

from advgeom.cli import app

runner = CliRunner()


def spheres(iterations: int) -> list[str]:
    """``advgeom train`` overrides of a seconds-long run on the spheres data set."""
    return ['dataset="spheres"', 'model="relu_mlp"', 'objective="bce"', f"iterations={iterations}", "batch_size=8",
            "dataset_kwargs.d=4", "dataset_kwargs.n=32", "model_kwargs.input_dim=4", "model_kwargs.width=8"]


def run(*args):
    """``advgeom ARGS`` in-process."""
    return runner.invoke(app, [str(a) for a in args])
