"""``advgeom reproduce``: run a registered experiment and write its report."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from advgeom.experiments.base import Context, Experiment, Outcome
from advgeom.registry import get
from advgeom.results import ResultStore, environment
from advgeom.results.render import comparison_markdown

QUICK_NOTE = ("Profile `quick`: scaled down to run on 2 CPU cores in minutes (fewer training "
              "steps and test points than the paper); numbers are indicative, not the paper's setting.")


@dataclass
class Report:
    experiment: Experiment
    outcome: Outcome
    path: Path
    seconds: float


def write_report(ctx: Context, exp: Experiment, outcome: Outcome, seconds: float,
                 env: dict[str, str], command: str) -> Path:
    """Markdown report with the comparison table, notes, figures and environment."""
    lines = [f"# {exp.name}: {exp.title}", "",
             f"Paper: `{exp.paper}`" + (f" — reference `[{exp.reference}]`" if exp.reference else ""),
             f"Profile: `{ctx.profile}` — seed {ctx.seed} — {seconds:.0f} s", ""]
    if ctx.profile == "quick":
        lines += [QUICK_NOTE, ""]
    if exp.description:
        lines += [exp.description, ""]
    lines += ["## Measured vs paper", "", comparison_markdown(outcome.comparisons), ""]
    if outcome.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in outcome.notes] + [""]
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


def reproduce(name: str, profile: str = "quick", *, root: str | Path = "runs",
              store_path: str | Path | None = None, device: str = "cpu", seed: int = 0,
              progress: bool = True, log=print) -> Report:
    """Run experiment ``name`` under ``profile``; rows go to the store, the report to
    ``root/reports/name/report.md``."""
    exp: Experiment = get("experiment", name)
    root = Path(root)
    store = ResultStore(store_path or root / "results.sqlite")
    env = environment(device)
    command = f"advgeom reproduce {name} --profile {profile}" + (f" --seed {seed}" if seed else "")
    store.start_run(command, env)
    ctx = Context(name, profile, root, store, torch.device(device), seed, progress, log)
    t0 = time.time()
    outcome = exp.fn(ctx)
    seconds = time.time() - t0
    path = write_report(ctx, exp, outcome, seconds, env, command)
    return Report(exp, outcome, path, seconds)
