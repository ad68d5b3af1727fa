"""The ``advgeom`` command line: list, train, evaluate, reproduce, results, report.

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
console = Console(soft_wrap=True, markup=False)  # user text is never markup
err_console = Console(stderr=True, markup=False)


_REPORTED: list[str] = []   # the one error line this process printed (a rank prints one)


def _say(msg: str) -> None:
    import signal

    from rich.text import Text

    # SIGTERM (torchrun stopping this rank) waits until the line is out: one line, never two
    block = getattr(signal, "pthread_sigmask", None)
    old = block(signal.SIG_BLOCK, {signal.SIGTERM}) if block else None
    try:
        _REPORTED.append(msg)
        # user text (paths, overrides) may contain "[...]": never read it as markup
        err_console.print(Text.assemble(("error:", "bold red"), " ", msg), highlight=False, soft_wrap=True)
    finally:
        if block:
            block(signal.SIG_SETMASK, old)


def _fail(msg: str, code: int = 2) -> None:
    _say(msg)
    raise typer.Exit(code)


def _on_sigterm(signum: int, frame: object) -> None:
    """torchrun stops the other ranks with SIGTERM when one dies: one line (naming the
    dead peer when it is known), then exit at once, as SIGTERM's default would."""
    from advgeom.distributed import peer_failure, resume_command

    if not _REPORTED:
        _say(peer_failure() or f"stopped by SIGTERM; resume from the last checkpoint with: "
                               f"{resume_command()}")
    sys.stderr.flush()
    os._exit(128 + signum)


def _join(device: str) -> tuple[object, str]:
    """Under torchrun, join the process group (gloo on CPU, NCCL on CUDA) and return the
    world and this rank's device; ranks other than 0 print nothing (rank 0 speaks)."""
    from advgeom.distributed import init_from_env
    from advgeom.types import check_device

    _run(check_device, device)   # before anything uses it: `--device cuda` without CUDA is one line
    w, device = _run(init_from_env, device)
    if w.distributed:
        import signal

        signal.signal(signal.SIGTERM, _on_sigterm)
    if not w.main:
        console.quiet = True
    return w, device


def _run(fn, *args, **kwargs):
    """Call ``fn`` turning advgeom errors, and under torchrun a dead peer rank, into
    one-line messages."""
    try:
        return fn(*args, **kwargs)
    except AdvgeomError as e:
        _fail(str(e))
    except typer.Exit:
        raise
    except RuntimeError as e:   # gloo/NCCL: a peer's connection closed
        from advgeom.distributed import peer_failure

        msg = peer_failure(e)
        if msg is None:
            raise
        _fail(msg)
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume from the last checkpoint", 130)


@app.callback()
def main(data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Directory with data set files (same as ADVGEOM_DATA).")) -> None:
    if data_dir is not None:
        if not data_dir.is_dir():
            _fail(f"--data-dir {data_dir}: no such directory")
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
        profiles = f"[{', '.join(obj.profiles)}] " if singular == "experiment" else ""
        typer.echo(f"{name:<24} {profiles}{doc.splitlines()[0] if doc else ''}".rstrip())


# ---------------------------------------------------------------------------
# train


@app.command()
def train(config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML training config."),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides."),
          root: Path = typer.Option(Path("runs"), help="Run directory (cache, checkpoints)."),
          device: str = typer.Option("cpu", help="torch device, e.g. cpu or cuda."),
          progress: bool = typer.Option(True, help="Show a progress bar."),
          reuse: bool = typer.Option(False, "--reuse", help="Accept a cached run or checkpoint "
                                     "written by another code version."),
          smoke: bool = typer.Option(False, "--smoke", help="A smoke run of the config: a few steps on "
                                     "small batches, every inner loop capped, under ROOT/smoke.")) -> None:
    """Train a model from a config; cached by config hash and code version, resumable after a kill."""
    from advgeom.config import config_hash, load_config
    from advgeom.train import TrainConfig, fit, smoke_config

    cfg = _run(load_config, TrainConfig, config, overrides or [])
    if smoke:
        from advgeom.experiments.smoke import SMOKE

        cfg, root = smoke_config(cfg), root / SMOKE
        console.print(f"--smoke: {cfg.iterations} training step(s) of batch {cfg.batch_size}, inner loops "
                      f"capped, under {root}", highlight=False, markup=False)
    _, device = _join(device)
    res = _run(fit, cfg, root=root, device=device, progress=progress, reuse=reuse)
    state = "cached" if res.cached else (f"resumed at step {res.resumed_from}" if res.resumed_from else "trained")
    console.print(f"{state}: {cfg.model} [{config_hash(cfg)}] -> {res.path}", highlight=False, markup=False)
    if res.history:
        last = res.history[-1]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "seconds", "lr"))
        console.print(f"step {last['step']}: {terms}", highlight=False, markup=False)
    for ev in res.events:
        console.print(f"warning: {ev['event'].replace('_', ' ')} at step {ev['step']} (monitored robust "
                      f"accuracy {ev['robust']:.1%} after a best of {ev['best_robust']:.1%})",
                      highlight=False, markup=False)
    if res.selected_step and res.selected_step != res.history[-1]["step"]:
        console.print(f"final weights: step {res.selected_step} (monitor.keep_best)", highlight=False,
                      markup=False)


# ---------------------------------------------------------------------------
# reproduce / results


@app.command()
def reproduce(name: str = typer.Argument(..., help="Experiment name (advgeom list experiments)."),
              profile: str = typer.Option("quick", help="quick (minutes), cpu (the paper's regime on 2 "
                                          "CPU cores) or paper (paper settings); those the experiment "
                                          "declares (advgeom list experiments)."),
              seed: int = typer.Option(0, help="Seed of the run."),
              root: Path = typer.Option(Path("runs"), help="Run directory."),
              db: Optional[Path] = typer.Option(None, help="Results database (default ROOT/results.sqlite)."),
              device: str = typer.Option("cpu"),
              progress: bool = typer.Option(True),
              strict: bool = typer.Option(True, help="Exit with status 1 when a sanity check of one "
                                                     "of its evaluations fails (--no-strict: exit 0)."),
              reuse: bool = typer.Option(False, "--reuse", help="Accept cached models and units of work "
                                       "written by another code version."),
              replace: bool = typer.Option(False, "--replace", help="Remove the stored rows this run "
                                           "measures again on another point set (other --n or data) "
                                           "before writing them; without it both are kept."),
              smoke: bool = typer.Option(False, "--smoke", help="Run the profile end to end in seconds: "
                                         "its models, shapes and data with every loop that grows with "
                                         "the profile capped (training steps, points, attack budgets, "
                                         "samples, sweeps). Everything goes under ROOT/smoke, rows are "
                                         "labelled PROFILE+smoke; check verdicts do not set the exit "
                                         "status."),
              plan: bool = typer.Option(False, "--plan", help="Print in seconds what the run will do "
                                        "(models, steps, batch, crafting, points, attacks and budgets) and "
                                        "its FLOPs and time on a GPU class and this CPU; trains nothing, "
                                        "writes nothing.")) -> None:
    """Train what is not cached, evaluate, compare with the paper, write a report. The
    report lists the sanity checks of every evaluation; a failed one makes the exit
    status 1 (after the report and rows are written) unless --no-strict (or --smoke).
    --plan only prints what the run will do and cost."""
    if plan:
        from advgeom.experiments.plan import make_plan, render

        console.print(render(_run(make_plan, name, profile, smoke=smoke, seed=seed)), highlight=False,
                      markup=False, soft_wrap=True)
        return
    from advgeom.experiments.runner import reproduce as run_experiment
    from advgeom.results.render import comparison_table
    from advgeom.seeding import seed_everything

    seed_everything(seed)
    w, device = _join(device)
    rep = _run(run_experiment, name, profile, root=root, store_path=db, device=device, seed=seed,
               progress=progress, log=lambda m: console.print(m, highlight=False), reuse=reuse,
               replace=replace, smoke=smoke)
    if w.main:
        _run(_keep_report, rep.store_path, rep, rep.profile, seed)
    console.print(comparison_table(rep.outcome.comparisons,
                                   title=f"{name} ({rep.profile}): measured vs paper"))
    for note in rep.outcome.notes:
        console.print(f"- {note}", highlight=False)
    for fig in rep.outcome.figures:
        console.print(f"figure: {fig}", highlight=False)
    console.print(f"report: {rep.path}  ({rep.seconds:.0f} s)", highlight=False)
    for label, r in rep.outcome.failed_checks:
        console.print(f"check failed: {r.name} in {label}: {r.message}", highlight=False)
    if smoke and not rep.ok:
        console.print(f"--smoke: {len(rep.outcome.failed_checks)} check(s) failed on capped attacks and "
                      "a model trained for a few steps; a smoke run's verdicts do not set the exit status",
                      highlight=False)
    elif strict and not rep.ok:
        _fail(f"{len(rep.outcome.failed_checks)} sanity check(s) failed: the numbers they concern "
              "are marked in the report and tables (--no-strict to exit 0 anyway)", 1)


@app.command()
def evaluate(checkpoint: Optional[Path] = typer.Option(None, help="A trained checkpoint (.safetensors)."),
             experiment: Optional[str] = typer.Option(None, help="Evaluate the models this experiment trains."),
             profile: str = typer.Option("quick", help="Profile of --experiment's models."),
             attacks: Optional[str] = typer.Option(
                 None, help="Attack specs, e.g. 'pgd:steps=100,step_size=0.01,apgd-dlr,square' "
                            "(default: pgd,apgd-dlr,square; not with --suite)."),
             suite: Optional[str] = typer.Option(
                 None, help="AutoAttack's suite as a cascade: standard (APGD-CE, APGD-T, FAB-T, "
                            "Square), plus or rand."),
             eps: str = typer.Option("0.1,0.2,0.3", help="Comma-separated eps values (fractions like 8/255 allowed)."),
             norm: str = typer.Option("linf", help="linf or l2."),
             dataset: Optional[str] = typer.Option(None, help="Data set (default: the model's training set)."),
             split: str = typer.Option("test"),
             n: Optional[int] = typer.Option(1000, "--n", "--points",
                                             help="Number of test points (first n); --points is the "
                                                  "same (torchrun takes --n for one of its own)."),
             batch_size: int = typer.Option(250),
             seed: int = typer.Option(0),
             strict: bool = typer.Option(True, help="Exit with status 1 when a sanity check fails "
                                                    "(--no-strict: report and exit 0)."),
             root: Path = typer.Option(Path("runs"), help="Run directory."),
             db: Optional[Path] = typer.Option(None, help="Results database (default ROOT/results.sqlite)."),
             device: str = typer.Option("cpu"),
             progress: bool = typer.Option(True),
             amp: bool = typer.Option(False, "--amp", help="Attacks' forward passes under bf16 "
                                      "autocast (GPU speed; scoring stays float32)."),
             reuse: bool = typer.Option(False, "--reuse", help="Accept cached models and units of work "
                                      "written by another code version."),
             replace: bool = typer.Option(False, "--replace", help="Remove the stored rows this run "
                                          "measures again on another point set (other --n or data) "
                                          "before writing them; without it both are kept."),
             smoke: bool = typer.Option(False, "--smoke", help="A smoke run: a few points in one batch, "
                                        "every attack budget capped, an experiment's models trained for a "
                                        "few steps; under ROOT/smoke, rows labelled smoke; check verdicts "
                                        "do not set the exit status.")) -> None:
    """Attack a checkpoint (or an experiment's models) with every attack at every eps, or
    with AutoAttack's suite (--suite standard); numbers concerned by a failed check are
    marked '!' and the exit status is 1 unless --no-strict (or --smoke)."""
    from advgeom.config import from_dict
    from advgeom.data import load
    from advgeom.eval import format_report, run_evaluation
    from advgeom.registry import get
    from advgeom.results import environment
    from advgeom.train import TrainConfig, fit, load_model, smoke_config
    from advgeom.train.checkpoint import load_checkpoint

    if (checkpoint is None) == (experiment is None):
        _fail("give exactly one of --checkpoint PATH or --experiment NAME")
    if suite is not None and attacks is not None:
        _fail("give either --attacks or --suite, not both")
    if suite is not None and suite not in ("standard", "plus", "rand"):
        _fail(f"unknown --suite {suite!r}; choose standard, plus or rand")
    if suite is None and attacks is None:
        attacks = "pgd,apgd-dlr,square"
    from advgeom.attacks.spec import parse_attacks, parse_eps

    if attacks is not None:   # every spec and eps checked before any file or device is used
        _run(parse_attacks, attacks)
    _run(parse_eps, eps)
    caps, smoke_rows = None, {}
    if smoke:
        from advgeom.attacks.spec import SMOKE_CAPS
        from advgeom.experiments.smoke import SMOKE, SMOKE_POINTS

        if db is not None:
            _fail(f"--smoke keeps its rows apart from real results, in "
                  f"{root / SMOKE / 'results.sqlite'}: do not give a results database (--db) with --smoke")
        caps, root, n = SMOKE_CAPS, root / SMOKE, min(n or SMOKE_POINTS, SMOKE_POINTS)
        batch_size = min(batch_size, n)
        smoke_rows = {"profile": f"{profile}+{SMOKE}" if experiment else SMOKE}
        budgets = ", ".join(f"{k} {v}" for k, v in caps.items())
        console.print(f"--smoke: {n} point(s), attack budgets capped ({budgets}), under {root}", highlight=False)
    w, device = _join(device)
    targets: list[tuple[str, object, TrainConfig]] = []
    if checkpoint is not None:
        model = _run(load_model, checkpoint, device)
        cfg = _run(from_dict, TrainConfig, _run(load_checkpoint, checkpoint)[1]["config"])
        targets.append((cfg.model, model, cfg))
    else:
        exp = _run(get, "experiment", experiment)
        if exp.models is None:
            _fail(f"experiment {experiment!r} declares no models to evaluate; use --checkpoint")
        _run(exp.check_profile, profile)
        for label, cfg in exp.models(profile).items():
            res = _run(fit, smoke_config(cfg) if smoke else cfg, root=root, device=device, progress=progress,
                       reuse=reuse)
            targets.append((label, res.model.eval(), cfg))
    from advgeom.results.store import open_store

    store = _run(open_store, db or root / "results.sqlite", reuse=reuse, replace=replace)
    if w.main:
        _run(store.start_run, "advgeom evaluate " + " ".join(sys.argv[2:]), environment(device))
    failed = False
    for label, model, cfg in targets:
        if device.startswith("cuda"):
            import torch

            model = model.to(memory_format=torch.channels_last)
        data = _run(load, dataset or cfg.dataset, split, **({} if dataset else cfg.dataset_kwargs))
        result = _run(run_evaluation, model, data, attacks, eps, suite=suite, norm=norm, n=n,
                      batch_size=batch_size,
                      store=store, experiment=experiment or "evaluate", model_name=label,
                      defense=cfg.objective, dataset=dataset or cfg.dataset, seed=seed,
                      progress=progress, plot_dir=str(root / "reports" / "evaluate") if w.main else None,
                      amp=amp, caps=caps, **smoke_rows)
        console.print(format_report(result), highlight=False)
        failed |= not result.ok
    if store.replaced:
        console.print(f"--replace: removed {store.replaced} stored row(s) measured on another "
                      "point set", highlight=False)
    if smoke and failed:
        console.print("--smoke: a check failed on capped attacks; a smoke run's verdicts do not set the "
                      "exit status", highlight=False)
    elif strict and failed:
        _fail("a sanity check failed: the numbers marked '!' are not trustworthy as they stand "
              "(--no-strict to exit 0 anyway)", 1)


def _keep_report(db: Path, rep, profile: str, seed: int) -> None:
    """Store an experiment's report in the database, for `advgeom report`."""
    from advgeom.results import ResultStore
    from advgeom.results.site import record_report

    record_report(ResultStore(db), rep, profile=profile, seed=seed)


class Fmt(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def results(experiment: Optional[str] = typer.Option(None, help="Only this experiment."),
            fmt: Fmt = typer.Option(Fmt.table, "--format", help="table, csv or json."),
            long: bool = typer.Option(False, "--long", help="One line per stored row (the tidy table)."),
            db: Path = typer.Option(Path("runs") / "results.sqlite", help="Results database.")) -> None:
    """Stored results: per evaluation, attacks down and eps across (--long: tidy rows)."""
    from advgeom.results.pivot import pivot
    from advgeom.results.render import pivot_tables, rows_csv, rows_json, rows_table

    rows = _stored_rows(db, experiment)
    if fmt is Fmt.csv:
        sys.stdout.write(rows_csv(rows))
    elif fmt is Fmt.json:
        sys.stdout.write(rows_json(rows) + "\n")
    elif long:
        console.print(rows_table(rows, title=f"{len(rows)} rows from {db}"))
    else:
        for part in pivot_tables(pivot(rows), width=min(console.width, 100)):
            console.print(part, soft_wrap=False, width=min(console.width, 100))


def _open_store(db: Path):
    """The results database at ``db``, opened read-only: a missing one is an error (never
    created here), and a file that is not an advgeom database is refused untouched."""
    from advgeom.results import ResultStore

    if not db.is_file():
        _fail(f"no results database at {db} (run `advgeom reproduce` or `advgeom evaluate` first)")
    return _run(ResultStore, db, readonly=True)


def _stored_rows(db: Path, experiment: Optional[str] = None) -> list:
    """The rows of ``db`` (one experiment's with ``experiment``); missing or empty is an error."""
    rows = _run(_open_store(db).query, **({"experiment": experiment} if experiment else {}))
    if not rows:
        _fail(f"no results for experiment {experiment!r} in {db}" if experiment else f"{db} holds no results yet")
    return rows


@app.command()
def report(db: Path = typer.Option(Path("runs") / "results.sqlite", help="Results database."),
           out: Path = typer.Option(Path("runs") / "site", help="Directory of the static site."),
           open_: bool = typer.Option(False, "--open", help="Print the path of index.html to open.")) -> None:
    """Write a static HTML report (leaderboard + one page per experiment) from the database alone."""
    from advgeom.results.site import build_site

    index = _run(build_site, _open_store(db), out)
    if open_:
        typer.echo(str(index.resolve()))
    else:
        console.print(f"report: {index}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
