"""The ``advgeom`` command line: list, train, evaluate, reproduce, results, report.

Every error from bad input is printed as one line on stderr with exit status 2.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from advgeom.errors import AdvgeomError, one_line

try:   # typer 0.2x carries its own copy of click; older typer uses the click package
    from typer._click import exceptions as _click_errors
except ImportError:   # pragma: no cover - depends on the installed typer
    from click import exceptions as _click_errors
_NO_ARGS = getattr(_click_errors, "NoArgsIsHelpError", ())   # click >= 8.2

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


_HEADER: list[str] = []     # the run's header, printed before its first line of output


def _out(msg: object, **kwargs: object) -> None:
    """Print a line of a run's output, after the run's header (:func:`_join`) when it is
    still pending: a run that ends in an error before any output prints the one error
    line alone."""
    while _HEADER:
        console.print(_HEADER.pop(0), highlight=False)
    console.print(msg, **{"highlight": False, **kwargs})


def _fail(msg: str, code: int = 2) -> None:
    _say(msg)
    raise typer.Exit(code)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning raised under the CLI: one line on stderr, without the source line
    and path Python's default adds."""
    from rich.text import Text

    err_console.print(Text.assemble(("warning:", "bold yellow"), " ", one_line(message)),
                      highlight=False, soft_wrap=True)


class _OneLine(TyperGroup):
    """The command group: usage errors (unknown command or option, a value of the wrong
    type, a missing argument) become one line and exit 2 instead of click's boxed
    usage text, and warnings print as one line each."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):   # type: ignore[override]
        import warnings

        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            try:
                rv = super().main(*args, standalone_mode=False, **kwargs)
            except _NO_ARGS as e:   # no arguments: the help
                e.show()
                rv = e.exit_code
            except _click_errors.UsageError as e:
                where = e.ctx.command_path if e.ctx is not None else "advgeom"
                _say(f"{where}: {one_line(e.format_message()).replace('Value error, ', '')} (see {where} --help)")
                rv = e.exit_code
            except _click_errors.ClickException as e:
                _say(one_line(e.format_message()))
                rv = e.exit_code
            except typer.Abort:
                _say("aborted")
                rv = 1
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(cls=_OneLine, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="advgeom: the geometry of adversarial robustness (five papers, one tool).")


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (``kill``; torchrun stopping the other ranks when one dies): one line
    (naming the dead peer when it is known, and the command that resumes), then exit at
    once, as SIGTERM's default would: what is written is kept (checkpoints and units are
    written atomically), a rerun resumes."""
    from advgeom.distributed import peer_failure, resume_command, world

    if not _REPORTED:
        again = (f"resume from the last checkpoint with: {resume_command()}" if world().distributed
                 else "rerun the same command to resume from the last checkpoint")
        _say(peer_failure() or f"stopped by SIGTERM; {again}")
    sys.stderr.flush()
    os._exit(128 + signum)


DEVICE_HELP = ("torch device: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; "
               "resolved once and printed in the run's header.")


def _resolve_device(device: str) -> str:
    """``--device`` resolved (``auto``) and checked before anything uses it: a device this
    machine lacks (``--device cuda`` without CUDA) is one line and exit 2."""
    from advgeom.types import resolve_device

    return _run(resolve_device, device)


def _join(device: str) -> tuple[object, str]:
    """Resolve ``device`` (:func:`_resolve_device`), under torchrun join the process group
    (gloo on CPU, NCCL on CUDA), print the run's device, and return the world and this
    rank's device; ranks other than 0 print nothing (rank 0 speaks)."""
    from advgeom.distributed import init_from_env
    from advgeom.types import AUTO

    asked, device = device, _resolve_device(device)
    w, device = _run(init_from_env, device)
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    if not w.main:
        console.quiet = True
    _HEADER[:] = [f"device: {device}" + (f" ({AUTO})" if asked == AUTO else "")]
    return w, device


def _check_root(root: Path) -> None:
    """A run directory that is a file, or lies under one, is one line before anything is
    printed or written."""
    p = root
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        _fail(f"--root {root}: {p} is a file, not a directory")


def _check_download(datasets: list[str]) -> None:
    """``--download``: one line, before anything runs, when a data set of the run has no
    download source; then every loader that has one may download
    (:data:`advgeom.data.base.DOWNLOAD_ENV`)."""
    from advgeom.data.base import DOWNLOAD_ENV, can_download

    for name in dict.fromkeys(datasets):
        if not _run(can_download, name):
            _fail(f"--download: data set {name!r} has no download source (it is generated, or read "
                  "only from a directory given by --data-dir / ADVGEOM_DATA or an offline package)")
    os.environ[DOWNLOAD_ENV] = "1"


def _announce(cfgs: list, root: Path, reuse: bool) -> None:
    """Say, before any training starts, what each config will do: cached, resumed or
    trained (steps, and how long its last recorded run took)."""
    from advgeom.train.preview import preview

    for cfg in cfgs:
        _out(_run(preview, cfg, root, reuse=reuse).text(), highlight=False)


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


def _version(value: bool) -> None:
    """``--version``: the installed distribution's version (package metadata)."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            console.print(f"advgeom {version('advgeom')}")
        except PackageNotFoundError:   # a source tree on PYTHONPATH, not installed
            from advgeom import __version__

            console.print(f"advgeom {__version__} (not installed)")
        raise typer.Exit()


@app.callback()
def main(data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Directory with data set files (same as ADVGEOM_DATA)."),
         version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print advgeom's version and exit.")) -> None:
    if data_dir is not None:
        if not data_dir.is_dir():
            _fail(f"--data-dir {data_dir}: " + ("a file, not a directory" if data_dir.exists()
                                                else "no such directory"))
        os.environ["ADVGEOM_DATA"] = str(data_dir)


# ---------------------------------------------------------------------------
# list


KINDS = {"datasets": "dataset", "models": "model", "attacks": "attack", "defenses": "defense",
         "experiments": "experiment"}


@app.command("list")
def list_(kind: str = typer.Argument(..., metavar="KIND", help="What to list: " + ", ".join(KINDS) + ".")) -> None:
    """List the registered names of one kind."""
    from advgeom.registry import did_you_mean, get, names

    if kind not in KINDS:
        hint = did_you_mean(kind, KINDS)
        _fail(f"unknown kind {kind!r}{'; ' + hint if hint else ''} (kinds: {', '.join(KINDS)})")
    singular = KINDS[kind]
    for name in names(singular):
        obj = get(singular, name)
        doc = getattr(obj, "title", None) or (getattr(obj, "__doc__", None) or "").strip()
        profiles = f"[{', '.join(obj.profiles)}] " if singular == "experiment" else ""
        typer.echo(f"{name:<24} {profiles}{doc.splitlines()[0] if doc else ''}".rstrip())


# ---------------------------------------------------------------------------
# train


@app.command()
def train(ctx: typer.Context,
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML training config."),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides."),
          root: Path = typer.Option(Path("runs"), help="Run directory (cache, checkpoints)."),
          device: str = typer.Option("auto", help=DEVICE_HELP),
          download: bool = typer.Option(False, "--download", help="Download the data set when no local "
                                        "source has it (checksummed; data sets with a download source)."),
          progress: bool = typer.Option(True, help="Show a progress bar."),
          reuse: bool = typer.Option(False, "--reuse", help="Accept a cached run or checkpoint "
                                     "written by another code version."),
          smoke: bool = typer.Option(False, "--smoke", help="A smoke run of the config: a few steps on "
                                     "small batches, every inner loop capped, under ROOT/smoke.")) -> None:
    """Train a model from a config (a TOML file and/or key=value overrides); cached by
    config hash and code version, resumable after a kill. Without a config: this help."""
    from advgeom.config import config_hash, load_config
    from advgeom.train import TrainConfig, fit, smoke_config
    from advgeom.train.preview import check_names

    if config is None and not overrides:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    _check_root(root)
    cfg = _run(load_config, TrainConfig, config, overrides or [])
    _check_idle_settings(cfg, config, overrides or [])
    _run(check_names, cfg)
    if download:
        _check_download([cfg.dataset])
    if smoke:
        from advgeom.experiments.smoke import SMOKE

        cfg, root = smoke_config(cfg), root / SMOKE
        console.print(f"--smoke: {cfg.iterations} training step(s) of batch {cfg.batch_size}, inner loops "
                      f"capped, under {root}", highlight=False, markup=False)
    _, device = _join(device)
    from advgeom.train.preview import preview

    plan = _run(preview, cfg, root, reuse=reuse)
    if plan.state != "cached":
        _out(plan.text(), highlight=False)
    res = _run(fit, cfg, root=root, device=device, progress=progress, reuse=reuse)
    state = "cached" if res.cached else (f"resumed at step {res.resumed_from}" if res.resumed_from else "trained")
    _out(f"{state}: {cfg.model} [{config_hash(cfg)}] -> {res.path}", highlight=False, markup=False)
    if res.history:
        last = res.history[-1]
        terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "seconds", "lr"))
        _out(f"step {last['step']}: {terms}", highlight=False, markup=False)
    for ev in res.events:
        _out(f"warning: {ev['event'].replace('_', ' ')} at step {ev['step']} (monitored robust "
                      f"accuracy {ev['robust']:.1%} after a best of {ev['best_robust']:.1%})",
                      highlight=False, markup=False)
    if res.selected_step and res.selected_step != res.history[-1]["step"]:
        _out(f"final weights: step {res.selected_step} (monitor.keep_best)", highlight=False,
                      markup=False)


def _check_idle_settings(cfg, config: Optional[Path], overrides: list[str]) -> None:
    """A setting the user gave (in the TOML file or an override) away from its default
    that the chosen optimizer or schedule never reads is one line, not a silent no-op."""
    from advgeom.config import read_toml, to_dict
    from advgeom.train.config import READ_ONLY_BY

    given = set(_run(read_toml, config)) if config is not None else set()
    given |= {o.partition("=")[0].strip() for o in overrides}
    defaults = to_dict(type(cfg)())
    values = to_dict(cfg)
    for key in sorted(given & set(READ_ONLY_BY)):
        field, reader = READ_ONLY_BY[key]
        if getattr(cfg, field) != reader and values[key] != defaults[key]:
            _fail(f"{key}={values[key]!r} does nothing with {field} {getattr(cfg, field)!r} "
                  f"(only {field} {reader!r} reads it)")


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
              device: str = typer.Option("auto", help=DEVICE_HELP),
              download: bool = typer.Option(False, "--download", help="Download data sets no local source "
                                            "has (checksummed; those with a download source)."),
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
                                        "its FLOPs and time on a GPU class and this CPU, and where each "
                                        "model stands in --root (cached, resumable at a step, to train) "
                                        "with the training left; trains nothing, writes nothing.")) -> None:
    """Train what is not cached, evaluate, compare with the paper, write a report. The
    report lists the sanity checks of every evaluation; a failed one makes the exit
    status 1 (after the report and rows are written) unless --no-strict (or --smoke).
    --plan only prints what the run will do and cost, and where a run under way in --root
    stands."""
    _check_root(root)
    if smoke and db is not None:
        from advgeom.experiments.smoke import SMOKE

        _fail(f"--smoke keeps its rows apart from real results, in {root / SMOKE / 'results.sqlite'}: "
              "do not give a results database (--db) with --smoke")
    if plan:
        from advgeom.experiments.plan import make_plan, render
        from advgeom.experiments.smoke import SMOKE

        idle = [opt for opt, given in (("--db", db is not None), ("--replace", replace),
                                       ("--device", device != "auto"), ("--download", download)) if given]
        if idle:
            _fail(f"--plan trains, evaluates and writes nothing: {', '.join(idle)} would do nothing (drop it)")

        console.print(render(_run(make_plan, name, profile, smoke=smoke, seed=seed),
                             root=root / SMOKE if smoke else root, reuse=reuse), highlight=False,
                      markup=False, soft_wrap=True)
        return
    from advgeom.experiments.runner import reproduce as run_experiment
    from advgeom.results.render import comparison_table
    from advgeom.seeding import seed_everything

    cfgs = _experiment_configs(name, profile, smoke, download)
    seed_everything(seed)
    w, device = _join(device)
    if cfgs:
        from advgeom.experiments.smoke import SMOKE
        from advgeom.results.schema import inspect

        run_root = root / SMOKE if smoke else root
        _run(inspect, Path(db or run_root / "results.sqlite"), 30.0)   # a foreign file: one line, first
        _announce(list(cfgs.values()), run_root, reuse)
    rep = _run(run_experiment, name, profile, root=root, store_path=db, device=device, seed=seed,
               progress=progress, log=lambda m: _out(m, highlight=False), reuse=reuse,
               replace=replace, smoke=smoke)
    if w.main:
        _run(_keep_report, rep.store_path, rep, rep.profile, seed)
    _out(comparison_table(rep.outcome.comparisons,
                                   title=f"{name} ({rep.profile}): measured vs paper"))
    for note in rep.outcome.notes:
        _out(f"- {note}", highlight=False)
    for fig in rep.outcome.figures:
        _out(f"figure: {fig}", highlight=False)
    _out(f"report: {rep.path}  ({rep.seconds:.0f} s)", highlight=False)
    for label, r in rep.outcome.failed_checks:
        _out(f"check failed: {r.name} in {label}: {r.message}", highlight=False)
    if smoke and not rep.ok:
        _out(f"--smoke: {len(rep.outcome.failed_checks)} check(s) failed on capped attacks and "
                      "a model trained for a few steps; a smoke run's verdicts do not set the exit status",
                      highlight=False)
    elif strict and not rep.ok:
        _fail(f"{len(rep.outcome.failed_checks)} sanity check(s) failed: the numbers they concern "
              "are marked in the report and tables (--no-strict to exit 0 anyway)", 1)


def _experiment_configs(name: str, profile: str, smoke: bool, download: bool) -> dict:
    """The training configs experiment ``name`` declares for ``profile`` by label (their
    smoke cut under ``--smoke``), every one checked (names, arguments, ``--download``)
    before anything is trained or loaded; ``{}`` when it declares none."""
    from advgeom.registry import get
    from advgeom.train import smoke_config
    from advgeom.train.preview import check_names

    exp = _run(get, "experiment", name)
    _run(exp.check_profile, profile)
    cfgs = dict(_run(exp.models, profile)) if exp.models is not None else {}
    cfgs = {label: smoke_config(c) if smoke else c for label, c in cfgs.items()}
    for cfg in cfgs.values():
        _run(check_names, cfg)
    if download:
        _check_download([c.dataset for c in cfgs.values()])
    return cfgs


@app.command()
def evaluate(checkpoint: Optional[Path] = typer.Option(None, help="A trained checkpoint (.safetensors), or a "
                                               "released state dict (.pt/.pth: RobustBench WRN or PreAct "
                                               "ResNet, Wong et al.'s MNIST net) with --dataset."),
             experiment: Optional[str] = typer.Option(None, help="Evaluate the models this experiment trains."),
             profile: Optional[str] = typer.Option(None, help="Profile of --experiment's models "
                                                   "(default quick; not with --checkpoint)."),
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
             device: str = typer.Option("auto", help=DEVICE_HELP),
             download: bool = typer.Option(False, "--download", help="Download data sets no local source "
                                           "has (checksummed; those with a download source)."),
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
    from advgeom.attacks.spec import parse_attacks, parse_eps
    from advgeom.config import from_dict
    from advgeom.data import load
    from advgeom.eval import format_report, run_evaluation
    from advgeom.eval.runner import NORMS
    from advgeom.registry import get
    from advgeom.results import environment
    from advgeom.results.pivot import CHECKPOINT_EXPERIMENT
    from advgeom.train import TrainConfig, fit, load_model
    from advgeom.train.checkpoint import load_checkpoint
    from advgeom.train.state import ZOO_SUFFIXES

    # every argument, spec and config is checked before any file, device or data is used
    if (checkpoint is None) == (experiment is None):
        _fail("give exactly one of --checkpoint PATH or --experiment NAME")
    if checkpoint is not None and profile is not None:
        _fail("--profile chooses --experiment's models; a --checkpoint is evaluated as it is (drop --profile)")
    profile = profile or "quick"
    if suite is not None and attacks is not None:
        _fail("give either --attacks or --suite, not both")
    if suite is not None and suite not in ("standard", "plus", "rand"):
        _fail(f"unknown --suite {suite!r}; choose standard, plus or rand")
    if suite is None and attacks is None:
        attacks = "pgd,apgd-dlr,square"
    if attacks is not None:
        _run(parse_attacks, attacks)
    eps_values = _run(parse_eps, eps)
    if norm not in NORMS:
        _fail(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if norm == "linf" and max(eps_values) > 1:
        _fail(f"linf eps {max(eps_values):g} > 1: inputs lie in [0, 1], so eps 1 already allows every "
              "input and a larger eps measures nothing more")
    if n is not None and n <= 0:
        _fail(f"--n must be a positive number of points, got {n}")
    if batch_size <= 0:
        _fail(f"--batch-size must be positive, got {batch_size}")
    if dataset is not None:
        _run(get, "dataset", dataset)
    _check_root(root)
    if checkpoint is not None and checkpoint.is_dir():
        _fail(f"--checkpoint {checkpoint} is a directory; give the checkpoint file in it "
              "(e.g. final.safetensors)")
    if checkpoint is not None and checkpoint.suffix.lower() in ZOO_SUFFIXES and not checkpoint.is_file():
        _fail(f"--checkpoint {checkpoint}: no such file")
    from advgeom.experiments.smoke import SMOKE

    if smoke and db is not None:
        _fail(f"--smoke keeps its rows apart from real results, in "
              f"{root / SMOKE / 'results.sqlite'}: do not give a results database (--db) with --smoke")
    cfgs = _experiment_configs(experiment, profile, smoke, False) if experiment is not None else {}
    if experiment is not None and not cfgs:
        _fail(f"experiment {experiment!r} declares no models to evaluate; use --checkpoint")
    caps, smoke_rows = None, ({"profile": profile} if experiment is not None else {})
    if smoke:
        from advgeom.attacks.spec import SMOKE_CAPS
        from advgeom.experiments.smoke import SMOKE_POINTS

        caps, root, n = SMOKE_CAPS, root / SMOKE, min(n or SMOKE_POINTS, SMOKE_POINTS)
        batch_size = min(batch_size, n)
        smoke_rows = {"profile": f"{profile}+{SMOKE}" if experiment else SMOKE}
        budgets = ", ".join(f"{k} {v}" for k, v in caps.items())
        console.print(f"--smoke: {n} point(s), attack budgets capped ({budgets}), under {root}", highlight=False)
    w, device = _join(device)
    if checkpoint is not None and checkpoint.suffix.lower() in ZOO_SUFFIXES:
        # a released state dict (load_model's zoo files) carries no training record: its
        # rows are named by the file and their data set is the user's
        if dataset is None:
            _fail(f"{checkpoint.name} is a plain state dict (a model-zoo or released file) and names no "
                  f"data set: give --dataset (e.g. mnist)")
        cfgs = {checkpoint.stem: _Released(dataset=dataset, model=checkpoint.stem)}
    elif checkpoint is not None:
        record = _run(load_checkpoint, checkpoint)[1]
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            _fail(f"{checkpoint}: its record holds no training config, so it was not written by advgeom "
                  "train (a released state dict goes as .pt/.pth with --dataset)")
        cfg = _run(from_dict, TrainConfig, record["config"])
        cfgs = {cfg.model: cfg}
    if download:
        _check_download([dataset] if dataset else [c.dataset for c in cfgs.values()])
    from advgeom.results.store import open_store

    # the results database next (another program's file is refused untouched), then the data
    store = _run(open_store, db or root / "results.sqlite", reuse=reuse, replace=replace)
    data_of: dict[str, object] = {}

    def data_for(cfg: TrainConfig) -> object:
        name, kwargs = dataset or cfg.dataset, {} if dataset else cfg.dataset_kwargs
        key = repr((name, sorted(kwargs.items())))
        if key not in data_of:
            data_of[key] = _run(load, name, split, **kwargs)
        return data_of[key]

    for cfg in cfgs.values():   # the evaluation data first: one that cannot be read fails before training
        data_for(cfg)
    targets: list[tuple[str, object, TrainConfig | _Released, object]] = []
    if checkpoint is None:
        _announce(list(cfgs.values()), root, reuse)
    for label, cfg in cfgs.items():
        model = (_run(load_model, checkpoint, device) if checkpoint is not None else
                 _run(fit, cfg, root=root, device=device, progress=progress, reuse=reuse).model.eval())
        targets.append((label, model, cfg, data_for(cfg)))
    if w.main:
        _run(store.start_run, "advgeom evaluate " + " ".join(sys.argv[2:]), environment(device))
    failed = False
    for label, model, cfg, data in targets:
        if device.startswith("cuda"):
            import torch

            model = model.to(memory_format=torch.channels_last)
        name = experiment or CHECKPOINT_EXPERIMENT
        if checkpoint is not None:   # one set of weights, one name (issue 30)
            name, label, smoke_rows = _checkpoint_name(store, model, label, smoke_rows)
        result = _run(run_evaluation, model, data, attacks, eps, suite=suite, norm=norm, n=n,
                      batch_size=batch_size,
                      store=store, experiment=name, model_name=label,
                      defense=cfg.objective, dataset=dataset or cfg.dataset, seed=seed,
                      progress=progress, plot_dir=str(root / "reports" / "evaluate") if w.main else None,
                      amp=amp, caps=caps, **smoke_rows)
        _out(format_report(result), highlight=False)
        failed |= not result.ok
    if store.replaced:
        _out(f"--replace: removed {store.replaced} stored row(s) measured on another "
                      "point set", highlight=False)
    if smoke and failed:
        _out("--smoke: a check failed on capped attacks; a smoke run's verdicts do not set the "
                      "exit status", highlight=False)
    elif strict and failed:
        _fail("a sanity check failed: the numbers marked '!' are not trustworthy as they stand "
              "(--no-strict to exit 0 anyway)", 1)


@dataclass(frozen=True)
class _Released:
    """What ``evaluate`` needs to know of a released state dict, which was never trained
    here: the name its rows take, the data set the user gave, and its defense label."""

    dataset: str
    model: str
    objective: str = "released"
    dataset_kwargs: dict = field(default_factory=dict)


def _checkpoint_name(store, model, label: str, rows: dict) -> tuple[str, str, dict]:
    """The (experiment, model label, row settings) a checkpoint's rows are stored under:
    the name the store already gives the same weights when an experiment evaluated them
    (:func:`advgeom.results.pivot.weights_names`), else ``evaluate`` and the model's name."""
    from advgeom.hashing import state_hash
    from advgeom.results.pivot import CHECKPOINT_EXPERIMENT, weights_names

    weights = state_hash(model)[:16]   # the rows' ``weights`` (advgeom.eval.runner.evaluate)
    owner = weights_names(_run(store.query, weights=weights)).get(weights)
    if owner is None:
        return CHECKPOINT_EXPERIMENT, label, rows
    _out(f"these weights are {owner[1]} of experiment {owner[0]} ({owner[2] or 'no profile'}): "
         "their rows are stored under that name")
    return owner[0], owner[1], {**rows, "profile": owner[2]}


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
            long: bool = typer.Option(False, "--long", help="One line per stored row (the tidy table); "
                                      "csv and json are always one record per row."),
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
    """The rows of ``db`` (one experiment's with ``experiment``), a checkpoint's evaluations under
    the name of the experiment that owns its weights; missing or empty is an error."""
    from advgeom.results.pivot import one_name

    rows = [r for r in one_name(_run(_open_store(db).query)) if experiment is None or r.experiment == experiment]
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
