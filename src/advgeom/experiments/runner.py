"""``advgeom reproduce``: run a registered experiment and write its report."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from advgeom.distributed import world
from advgeom.eval.checks import collect_reports
from advgeom.errors import AdvgeomError
from advgeom.experiments.base import Context, Experiment, Outcome
from advgeom.experiments.settings import settings_markdown, training_settings
from advgeom.experiments.smoke import SMOKE, smoke_note
from advgeom.registry import get
from advgeom.results import environment
from advgeom.results.store import open_store
from advgeom.results.render import comparison_markdown
from advgeom.results.runinfo import run_record, snapshot

PROFILE_NOTES = {
    "quick": ("Profile `quick`: scaled down to run on 2 CPU cores in minutes (fewer training "
              "steps and test points than the paper); numbers are indicative, not the paper's setting."),
    "cpu": ("Profile `cpu`: the paper's models, threat model and attacks, with training schedules "
            "compressed by published fast recipes to fit 2 CPU cores (each change named below as "
            "an assumption), on at least 1,000 test points."),
}


@dataclass
class Report:
    experiment: Experiment
    outcome: Outcome
    path: Path
    seconds: float
    store_path: Path | None = None   # the results store the rows went to
    profile: str = ""                # the rows' profile label (``cpu``, ``cpu+smoke``)

    @property
    def ok(self) -> bool:
        """No check of the experiment's evaluations failed."""
        return self.outcome.ok


def write_report(ctx: Context, exp: Experiment, outcome: Outcome, seconds: float,
                 env: dict[str, str], command: str) -> Path:
    """Markdown report with the comparison table, notes, figures and environment."""
    lines = [f"# {exp.name}: {exp.title}", "",
             f"Paper: `{exp.paper}`" + (f" — reference `[{exp.reference}]`" if exp.reference else ""),
             f"Profile: `{ctx.label}` — seed {ctx.seed} — {seconds:.0f} s", ""]
    if ctx.smoke:
        lines += [smoke_note(), ""]
    if ctx.profile in PROFILE_NOTES:
        lines += [PROFILE_NOTES[ctx.profile], ""]
    if ctx.profile in exp.expected:
        lines += [f"Expected cost of this profile: {exp.expected[ctx.profile]}.", ""]
    if exp.description:
        lines += [exp.description, ""]
    lines += ["## Measured vs paper", "", comparison_markdown(outcome.comparisons), ""]
    if outcome.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in outcome.notes] + [""]
    lines += checks_markdown(outcome)
    lines += report_settings(ctx, exp)
    if outcome.figures:
        lines += ["## Figures", ""]
        for f in outcome.figures:
            rel = Path(f).name
            lines += [f"![{rel}]({rel})", ""]
    lines += ["## Reproduce", "", f"```\n{command}\n```", "", "## Environment", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(env.items())]
    path = ctx.out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def report_settings(ctx: Context, exp: Experiment) -> list[str]:
    """The settings table: the training settings of the experiment's models in this
    profile with their declared sources, then the evaluation settings the run recorded
    (:meth:`Context.setting`). Under ``--smoke`` it gives the profile's settings, which
    the smoke note says were capped."""
    configs = exp.models(ctx.profile) if exp.models else {}
    rows, missing = training_settings(configs, exp.sources(ctx.profile) if exp.sources else {})
    rows += ctx.settings
    if not rows and not missing:
        return []
    lines = settings_markdown(rows, missing, configs)
    if ctx.smoke:
        lines[2] += " The profile's settings: this `--smoke` run capped every loop that grows with it."
    return lines


def checks_markdown(outcome: Outcome) -> list[str]:
    """The "Checks" section: one line per evaluation with its verdict, failed and
    warned checks named (docs/design.md: a number is reported only with the checks' verdict)."""
    if not outcome.checks:
        return ["## Checks", "", "No evaluation with sanity checks ran in this experiment.", ""]
    failed = outcome.failed_checks
    lines = ["## Checks", "",
             (f"**FAILED: {len(failed)} check(s) failed**; the numbers they concern are marked "
              "in the stored rows and tables." if failed else
              f"No check failed in the {len(outcome.checks)} evaluation(s) "
              f"({sum(len(rep.warnings) for _, rep in outcome.checks)} warning(s))."), "",
             "| evaluation | verdict | checks not passed |", "|---|---|---|"]
    for label, rep in outcome.checks:
        bad = [f"{r.name} ({r.status}): {r.message}" for r in rep.failed + rep.warnings]
        verdict = "fail" if rep.failed else ("warn" if rep.warnings else "pass")
        lines.append(f"| {label} | {verdict} | {'; '.join(bad).replace('|', '/') or '-'} |")
    return lines + [""]


def reproduce(name: str, profile: str = "quick", *, root: str | Path = "runs",
              store_path: str | Path | None = None, device: str = "cpu", seed: int = 0,
              progress: bool = True, log=print, reuse: bool = False, replace: bool = False,
              smoke: bool = False) -> Report:
    """Run experiment ``name`` under ``profile``; rows go to the store, the report to
    ``root/reports/name/report.md``. Cached models and units of work count only when
    the current code produced them, unless ``reuse``. ``replace``: stored rows that this
    run measures again on another point set are removed (``ResultStore.add``).

    ``smoke`` (``--smoke``): the same profile with every loop that grows with it capped
    (:class:`Context`), run apart from real results: run directory, store and reports
    under ``root/smoke``, rows labelled ``<profile>+smoke``. A store path of one's own is
    refused with it (the smoke store is always ``root/smoke/results.sqlite``).

    Under torchrun every rank runs the experiment (training and evaluation are split
    across ranks, :mod:`advgeom.distributed`); rank 0 alone writes the store, the run
    directory and the report. Other ranks read the store and put the figures they draw
    in a private temporary directory, removed at the end."""
    start = snapshot()
    exp: Experiment = get("experiment", name)
    exp.check_profile(profile)
    w = world()
    root = Path(root)
    if smoke:
        if store_path is not None:
            raise AdvgeomError(f"--smoke keeps its rows apart from real results, in "
                               f"{root / SMOKE / 'results.sqlite'}: do not give a results database "
                               "(--db) with --smoke")
        root = root / SMOKE
    db = Path(store_path or root / "results.sqlite")
    store = open_store(db, reuse=reuse, replace=replace)
    env = environment(device)
    command = (f"advgeom reproduce {name} --profile {profile}" + (f" --seed {seed}" if seed else "")
               + (" --reuse" if reuse else "") + (" --replace" if replace else "")
               + (" --smoke" if smoke else ""))
    if w.main:
        store.start_run(command, env)
    private = None if w.main else tempfile.mkdtemp(prefix=f"advgeom-rank{w.rank}-")
    ctx = Context(name, profile, root if w.main else Path(private), store, torch.device(device), seed,
                  progress and w.main, log if w.main else (lambda m: None), reuse, smoke)
    try:
        t0 = time.time()
        with collect_reports() as reports:
            outcome = exp.fn(ctx)
        seen = {id(rep) for _, rep in outcome.checks}
        outcome.checks += [(label, rep) for label, rep in reports if id(rep) not in seen]
        seconds = time.time() - t0
        path = write_report(ctx, exp, outcome, seconds, env, command) if w.main else ctx.out_dir
        if w.main:
            (path.parent / "RUN.md").write_text(run_record(command, env, start, argv=sys.argv,
                                                           sections=ctx.time_lines()))
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
    return Report(exp, outcome, path, seconds, db, ctx.label)
