"""How a run was made: the RUN.md written beside every report of ``advgeom reproduce``.

A report's numbers are read together with how they were obtained: the command, the code
(git sha, and whether the tree had uncommitted changes), the machine (CPU model, cores),
the threads, how busy the machine was (load average at the start and at the end) and the
wall time. Timings measured beside other jobs are inflated, and a run from a dirty tree
cannot be reproduced from its commit; RUN.md says both plainly.

:func:`snapshot` and :func:`machine` read the clock, the load and the machine;
:func:`run_markdown` is a pure function of what they return; :func:`run_record` combines
them for ``advgeom reproduce``. :func:`recorded_run_markdown` writes the same page for a
report made before RUN.md existed, from the facts its header and Environment section
recorded, and names every fact that was not recorded.
"""
from __future__ import annotations

import os
import re
import resource
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from advgeom.results.env import cpu_name

NOT_RECORDED = "not recorded"
DIRTY_VERDICT = "run from a dirty tree: to be rerun from a clean tree"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Snapshot:
    """One instant of a run: wall clock (Unix seconds), the 1/5/15-minute load average
    (``None`` where the system gives none) and the CPU seconds this process and its
    finished children have used."""
    wall: float
    load: tuple[float, float, float] | None
    cpu: float


def load_average(path: str | Path = "/proc/loadavg") -> tuple[float, float, float] | None:
    """The 1, 5 and 15-minute load average (``/proc/loadavg``, else ``os.getloadavg``),
    or ``None`` where neither exists. It counts runnable threads of every process, so a
    value above the number of cores means that jobs were queueing for them."""
    try:
        first = Path(path).read_text().split()[:3]
        return (float(first[0]), float(first[1]), float(first[2]))
    except (OSError, ValueError, IndexError):
        pass
    try:
        a, b, c = os.getloadavg()
        return (a, b, c)
    except (OSError, AttributeError):
        return None


def snapshot(loadavg: str | Path = "/proc/loadavg") -> Snapshot:
    """The clock, the load average and this process's CPU time, now."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    return Snapshot(time.time(), load_average(loadavg), cpu)


def machine(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The CPU model, the logical CPUs of the machine and those this process may use
    (its affinity: a container or ``taskset`` may allow fewer), the niceness and the
    thread-count variables of the environment."""
    logical = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    try:
        nice = str(os.getpriority(os.PRIO_PROCESS, 0))
    except (AttributeError, OSError):
        nice = NOT_RECORDED
    threads_env = ", ".join(f"{v}={os.environ[v]}" for v in THREAD_VARIABLES if v in os.environ)
    return {"cpu": cpu_name(cpuinfo), "logical_cpus": str(logical), "usable_cpus": str(usable),
            "nice": nice, "thread_variables": threads_env or "none set"}


def tree_state(git_sha: str) -> str:
    """Whether the recorded sha says the source tree was clean: ``clean``, ``dirty``
    (``+dirty``: uncommitted changes to tracked files) or ``unknown`` (no checkout)."""
    if not git_sha or git_sha == "unknown" or git_sha == NOT_RECORDED:
        return "unknown"
    return "dirty" if git_sha.endswith("+dirty") else "clean"


def _load_text(load: tuple[float, float, float] | None) -> str:
    return NOT_RECORDED if load is None else f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)"


def _tree_text(state: str) -> str:
    return {"clean": "yes (no uncommitted changes to tracked files)",
            "dirty": "**no** (`+dirty`: uncommitted changes to tracked files); to be rerun from a clean tree",
            }.get(state, "unknown (not run from a git checkout, or not recorded)")


def _busy_text(load_start: tuple[float, float, float] | None,
               load_end: tuple[float, float, float] | None, cores: str, threads: str) -> str:
    """One sentence on how busy the machine was, from the 1-minute loads, the usable cores
    and this run's threads (the load at the end counts the run's own threads)."""
    if load_start is None or not cores.isdigit():
        return ("How busy the machine was is unknown (load average not recorded): the wall time "
                "may include time shared with other jobs.")
    n, own = int(cores), (int(threads) if threads.isdigit() else 0)
    start, end = load_start[0], (load_end[0] if load_end else None)
    others_end = None if end is None else end - own
    shared = start >= 0.5 or (others_end is not None and others_end >= 0.5)
    seen = (f"1-minute load {start:.1f} at the start"
            + (f" and {end:.1f} at the end, this run's {own} thread(s) included," if end is not None else "")
            + f" on {n} usable core(s)")
    if shared:
        return (f"Other jobs shared the machine: {seen}. The wall time is inflated, not a timing "
                "of an idle machine.")
    return f"The machine was otherwise idle: {seen}."


def invocation(argv: Sequence[str] | None) -> str:
    """The command line as typed (``advgeom ...`` or ``python -m advgeom ...``) from ``argv``."""
    if not argv:
        return NOT_RECORDED
    prog = Path(argv[0]).name
    if prog in ("__main__.py", "-m"):
        head = ["python", "-m", "advgeom"]
    else:
        head = ["python", prog] if prog.endswith(".py") else [prog]
    return shlex.join(head + list(argv[1:]))


def run_markdown(command: str, env: Mapping[str, str], load_start: tuple[float, float, float] | None,
                 load_end: tuple[float, float, float] | None, seconds: float | None, *,
                 machine: Mapping[str, str] | None = None, started: float | None = None,
                 cpu_seconds: float | None = None, argv: Sequence[str] | None = None,
                 title: str = "How report.md was produced", notes: Iterable[str] = (),
                 sections: Sequence[str] = ()) -> str:
    """RUN.md for one run: command, git sha and whether the tree was clean, machine (CPU
    model, cores), threads, load average at the start and the end, wall and CPU time.
    Pure: every fact is an argument; a fact given as ``None`` prints as not recorded."""
    m = dict(machine or {})
    sha = env.get("git_sha", NOT_RECORDED)
    state = tree_state(sha)
    usable, logical = m.get("usable_cpus", NOT_RECORDED), m.get("logical_cpus", NOT_RECORDED)
    cores = ("cores " + NOT_RECORDED if usable == NOT_RECORDED and logical == NOT_RECORDED else
             f"{usable} usable of {logical} logical CPUs")
    cpu = m.get("cpu") or env.get("device", "").partition(":")[2] or "cpu"
    if cpu == "cpu":
        cpu = "CPU model " + NOT_RECORDED
    threads = env.get("threads", NOT_RECORDED)
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if started is not None
            else NOT_RECORDED)
    rows = [
        ("command", f"`{command}`"),
        ("invoked as", f"`{invocation(argv)}`" if argv else NOT_RECORDED),
        ("started", when),
        ("git sha", f"`{sha}`"),
        ("tree clean", _tree_text(state)),
        ("code fingerprint", env.get("code", NOT_RECORDED)),
        ("machine", f"{cpu}; {cores}; {env.get('platform', NOT_RECORDED)}"),
        ("device", env.get("device", NOT_RECORDED)),
        ("threads", f"torch {threads}; thread variables: {m.get('thread_variables', NOT_RECORDED)}"),
        ("niceness", m.get("nice", NOT_RECORDED)),
        ("ranks (world size)", env.get("world_size", NOT_RECORDED)),
        ("load average at start", _load_text(load_start)),
        ("load average at end", _load_text(load_end)),
        ("wall time", NOT_RECORDED if seconds is None else f"{seconds:.0f} s"),
        ("CPU time", NOT_RECORDED if cpu_seconds is None else
         f"{cpu_seconds:.0f} s (this process and its finished children)"),
        ("versions", f"advgeom {env.get('advgeom', '?')}, torch {env.get('torch', '?')}, "
                     f"python {env.get('python', '?')}"),
    ]
    lines = [f"# {title}", ""]
    if state == "dirty":
        lines += [f"**{DIRTY_VERDICT[0].upper() + DIRTY_VERDICT[1:]}** (git sha `{sha}`).", ""]
    lines += ["| fact | value |", "|---|---|"] + [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
    lines += ["", _busy_text(load_start, load_end, usable if usable != NOT_RECORDED else logical, threads)]
    if sections:                      # e.g. the experiment's time per model
        lines += ["", *sections]
    notes = list(notes)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def run_record(command: str, env: Mapping[str, str], start: Snapshot, *,
               end: Snapshot | None = None, argv: Sequence[str] | None = None,
               machine_info: Mapping[str, str] | None = None, sections: Sequence[str] = ()) -> str:
    """RUN.md for a run that began at ``start`` and ends now (or at ``end``): what
    ``advgeom reproduce`` writes beside its report (``sections``: Markdown lines after
    the facts, e.g. the time per model)."""
    end = end or snapshot()
    return run_markdown(command, env, start.load, end.load, end.wall - start.wall,
                        machine=machine_info if machine_info is not None else machine(),
                        started=start.wall, cpu_seconds=end.cpu - start.cpu, argv=argv,
                        sections=sections)


# ---------------------------------------------------------------------------
# reports made before RUN.md existed

_HEADER = re.compile(r"^Profile: `(?P<profile>[^`]+)` — seed (?P<seed>\d+) — (?P<seconds>[\d.]+) s$", re.M)


def recorded_facts(report: str) -> dict[str, str]:
    """What a report.md recorded about its run: ``command`` (its Reproduce section),
    ``seconds``, ``profile`` and ``seed`` (its header) and each ``- key: value`` of its
    Environment section."""
    facts: dict[str, str] = {}
    head = _HEADER.search(report)
    if head:
        facts.update(head.groupdict())
    repro = re.search(r"^## Reproduce\s*\n+```\n(.+?)\n```", report, re.M | re.S)
    if repro:
        facts["command"] = repro.group(1).strip()
    env = re.search(r"^## Environment\s*\n(.*?)(?=^## |\Z)", report, re.M | re.S)
    if env:
        for key, value in re.findall(r"^- ([\w]+): (.+)$", env.group(1), re.M):
            facts.setdefault(key, value.strip())
    return facts


def recorded_run_markdown(report: str, *, notes: Iterable[str] = ()) -> str:
    """RUN.md for a report written before ``advgeom reproduce`` recorded its runs: the
    facts the report holds (command, git sha, code, torch, device, threads, the header's
    seconds), every other fact printed as not recorded, and ``notes`` (what is known from
    elsewhere: commit history, results/README.md)."""
    f = recorded_facts(report)
    env = {k: v for k, v in f.items() if k not in ("command", "seconds", "profile", "seed")}
    missing = ["the exact command line", "when it started", "the load average",
               "the number of cores", "the niceness", "the CPU time"]
    if "code" not in env:
        missing.append("the code fingerprint")
    if env.get("device", "").endswith(":cpu"):
        missing.append("the CPU model (this version recorded the device as `cpu:cpu`)")
    lead = (f"Written afterwards from report.md's header and Environment section; not recorded "
            f"at the time: {', '.join(missing)}. The wall time is the report header's (the "
            f"experiment itself, without the process start).")
    seconds = float(f["seconds"]) if "seconds" in f else None
    return run_markdown(f.get("command", NOT_RECORDED), env, None, None, seconds,
                        machine={}, title="How report.md was produced (recorded afterwards)",
                        notes=[lead, *notes])
