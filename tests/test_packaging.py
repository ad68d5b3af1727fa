"""The package as users install it: the version comes from the package metadata, and a
wheel built with pip installs and runs outside the Makefile, beside an installed torch
that it does not replace."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

import advgeom
from advgeom.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_everywhere():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == advgeom.__version__
    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"advgeom {advgeom.__version__}")
    assert (ROOT / "src" / "advgeom" / "py.typed").is_file()


def _run(cmd: list[str], **kw) -> str:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _host_packages(tmp_path: Path) -> Path:
    """A directory showing every package of this interpreter's site-packages (torch among
    them) except advgeom itself, so the fresh environment sees the installed torch and
    dependencies but not the advgeom under test."""
    import torch

    host = Path(torch.__file__).resolve().parents[1]
    view = tmp_path / "host-packages"
    view.mkdir()
    for entry in host.iterdir():
        name = entry.name.lower()
        if "advgeom" in name or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    return view


ATTACK = """
import sys, torch, advgeom
from pathlib import Path
from torch import nn
from advgeom.attacks import pgd
assert Path(advgeom.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), advgeom.__file__
assert (Path(advgeom.__file__).parent / "py.typed").is_file()
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
adv = pgd(model, x, y, eps=0.1, steps=10)
assert adv.shape == x.shape and (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
print("torch", torch.__version__, Path(torch.__file__).resolve())
print("robust", (model(adv).argmax(1) == y).float().mean().item(), "clean", (model(x).argmax(1) == y).float().mean().item())
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_beside_torch(tmp_path):
    """pip wheel, then a fresh venv that sees this interpreter's torch (and the other
    dependencies) through a .pth file, then ``pip install --no-index`` of the wheel: with no
    index, pulling another torch (or anything) would fail the install. About 30-60 s."""
    import torch

    start = time.monotonic()
    # built from a copy of what a clean checkout holds: no build/ or egg-info left in the tree
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", wheels, tree], cwd=tmp_path)
    (wheel,) = wheels.glob("advgeom-*.whl")
    venv = tmp_path / "venv"
    # without pip (nor the setuptools Python 3.11's venv bundles, older than torch needs):
    # this interpreter's pip installs into it through --python
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "host-packages.pth").write_text(f"{_host_packages(tmp_path)}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index", wheel], env=env)
    assert not list(site.glob("torch*")), "the wheel's install put a torch into the venv"
    assert _run([venv / "bin" / "advgeom", "--version"], env=env).strip() == f"advgeom {advgeom.__version__}"
    out = _run([python, "-c", ATTACK], env=env, cwd=tmp_path)
    assert f"torch {torch.__version__} {Path(torch.__file__).resolve()}" in out  # the host's torch
    assert time.monotonic() - start < 120
