"""The ``advgeom`` command line: list, train, evaluate, reproduce, results.

Every error from bad input is printed as one line on stderr with exit status 2.
"""
from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from advgeom.errors import AdvgeomError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="advgeom: the geometry of adversarial robustness (five papers, one tool).")
console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _run(fn, *args, **kwargs):
    """Call ``fn`` turning advgeom errors into one-line messages."""
    try:
        return fn(*args, **kwargs)
    except AdvgeomError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume from the last checkpoint", 130)


@app.callback()
def main(data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Directory with data set files (same as ADVGEOM_DATA).")) -> None:
    if data_dir is not None:
        os.environ["ADVGEOM_DATA"] = str(data_dir)


# ---------------------------------------------------------------------------
# list


class Kind(str, Enum):
    datasets = "datasets"
    models = "models"
    attacks = "attacks"
    defenses = "defenses"
    experiments = "experiments"


@app.command("list")
def list_(kind: Kind = typer.Argument(..., help="What to list.")) -> None:
    """List the registered names of one kind."""
    from advgeom.registry import get, names

    singular = {"datasets": "dataset", "models": "model", "attacks": "attack",
                "defenses": "defense", "experiments": "experiment"}[kind.value]
    for name in names(singular):
        obj = get(singular, name)
        doc = getattr(obj, "title", None) or (getattr(obj, "__doc__", None) or "").strip()
        typer.echo(f"{name:<24} {doc.splitlines()[0] if doc else ''}".rstrip())


# ---------------------------------------------------------------------------
# train


@app.command()
def train(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML training config."),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides."),
          root: Path = typer.Option(Path("runs"), help="Run directory (cache, checkpoints)."),
          device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
          progress: bool = typer.Option(True, help="Show a progress bar.")) -> None:
    """Train a model from a config; cached by config hash and resumable after a kill."""
    from advgeom.config import config_hash, load_config
    from advgeom.train import TrainConfig, fit

    cfg = _run(load_config, TrainConfig, config, overrides or [])
    res = _run(fit, cfg, root=root, device=device, progress=progress)
    state = "cached" if res.cached else (f"resumed at step {res.resumed_from}" if res.resumed_from else "trained")
    console.print(f"{state}: {cfg.model} [{config_hash(cfg)}] -> {res.path}", highlight=False)


# ---------------------------------------------------------------------------
# reproduce / results


@app.command()
def reproduce(name: str = typer.Argument(..., help="Experiment name (advgeom list experiments)."),
              profile: str = typer.Option("quick", help="quick (2 CPU cores) or paper (paper settings)."),
              seed: int = typer.Option(0, help="Seed of the run."),
              root: Path = typer.Option(Path("runs"), help="Run directory."),
              db: Optional[Path] = typer.Option(None, help="Results database (default ROOT/results.sqlite)."),
              device: str = typer.Option("cpu"),
              progress: bool = typer.Option(True)) -> None:
    """Train what is not cached, evaluate, compare with the paper, write a report."""
    from advgeom.experiments.runner import reproduce as run_experiment
    from advgeom.results.render import comparison_table
    from advgeom.seeding import seed_everything

    seed_everything(seed)
    rep = _run(run_experiment, name, profile, root=root, store_path=db, device=device, seed=seed,
               progress=progress, log=lambda m: console.print(m, highlight=False))
    console.print(comparison_table(rep.outcome.comparisons,
                                   title=f"{name} ({profile}): measured vs paper"))
    for note in rep.outcome.notes:
        console.print(f"- {note}", highlight=False)
    for fig in rep.outcome.figures:
        console.print(f"figure: {fig}", highlight=False)
    console.print(f"report: {rep.path}  ({rep.seconds:.0f} s)", highlight=False)


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def results(experiment: Optional[str] = typer.Option(None, help="Only this experiment."),
            fmt: Fmt = typer.Option(Fmt.table, "--format", help="table, csv or json."),
            db: Path = typer.Option(Path("runs") / "results.sqlite", help="Results database.")) -> None:
    """Query stored result rows."""
    from advgeom.results import ResultStore
    from advgeom.results.render import rows_csv, rows_json, rows_table

    if not db.is_file():
        _fail(f"no results database at {db} (run `advgeom reproduce` or `advgeom evaluate` first)")
    store = _run(ResultStore, db)
    rows = _run(store.query, **({"experiment": experiment} if experiment else {}))
    if fmt is Fmt.csv:
        sys.stdout.write(rows_csv(rows))
    elif fmt is Fmt.json:
        sys.stdout.write(rows_json(rows) + "\n")
    else:
        console.print(rows_table(rows, title=f"{len(rows)} rows from {db}"))


if __name__ == "__main__":  # pragma: no cover
    app()
