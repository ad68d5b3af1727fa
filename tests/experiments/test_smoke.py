"""``--smoke`` (issues 25 and 27): every profile of every registered experiment runs end to
end, in seconds to a minute, on the real models, shapes and data (CIFAR-10 and CIFAR-100 on generated
CIFAR-shaped files in a user directory), apart from real results; the caps really apply (training
config, attack budgets of every registered attack, evaluated points); real runs are
untouched; the CLI takes --smoke in reproduce, evaluate and train."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from advgeom.attacks.spec import ALIASES, SMOKE_CAPS, AttackSpec, cap_spec, cap_spec_text, parse_attack_spec
from advgeom.config import config_hash
from advgeom.errors import AdvgeomError
from advgeom.experiments import at_mnist as AT
from advgeom.experiments.base import Context
from advgeom.experiments.smoke import SMOKE, SMOKE_POINTS
from advgeom.experiments.runner import reproduce
from advgeom.registry import get, names
from advgeom.results import ResultStore
from advgeom.seeding import make_generator
from advgeom.train import TrainConfig, smoke_config
from advgeom.train.build import SMOKE_BATCH, SMOKE_MONITOR, SMOKE_STEPS

CASES = [(name, profile) for name in names("experiment") if not name.startswith("_")
         for profile in get("experiment", name).profiles]
# The CIFAR-10 paper profiles run the real CIFAR architectures (WRN-34-10, CNN7, 12 hyperspherical
# CNNs): 30-60 s each on 2 busy cores, the rest a few seconds.
SLOW = {"hyper-cifar", "penalty-cifar", "penalty-cifar100", "spectral-cifar"}
# Experiments whose results are figures and cached units only (they record no rows), and
# spheres-bound, which records a row per snapshot that its plotting rule keeps (sampled
# errors and >= 90% of points reaching one: rarely so after a training step).
NO_ROWS = {"spheres-dimension", "spheres-slices", "sparsity-cw", "sparsity-theory"}
MAYBE_ROWS = {"spheres-bound"}


def write_cifar_like(directory, *, per_batch: int = 20, n_test: int = 40) -> None:
    """The python-pickle batches of cifar-10-batches-py (data_batch_1..5, test_batch) and of
    cifar-100-python (train, test): uint8 rows of 3072, every CIFAR-10 class present in each batch."""
    rng = np.random.default_rng(0)
    out = directory / "cifar-10-batches-py"
    out.mkdir(parents=True)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {"batch_label": name, "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(n) % 10]}
        (out / name).write_bytes(pickle.dumps(batch, protocol=4))
    out = directory / "cifar-100-python"
    out.mkdir()
    for name, n in (("train", 5 * per_batch), ("test", n_test)):
        batch = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "fine_labels": [int(v) for v in np.arange(n) % 100],
                 "coarse_labels": [int(v) for v in np.arange(n) % 20]}
        (out / name).write_bytes(pickle.dumps(batch, protocol=4))


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar-user-dir")
    write_cifar_like(d)
    return d


@pytest.fixture
def user_data(cifar_dir, monkeypatch):
    """$ADVGEOM_DATA pointing at the generated CIFAR-shaped files (MNIST and Fashion-MNIST
    still come from their offline packages)."""
    monkeypatch.setenv("ADVGEOM_DATA", str(cifar_dir))


def test_every_experiment_declares_its_profiles():
    assert ("at-mnist", "cpu") in CASES and ("penalty-cifar", "paper") in CASES
    for name in ("hyper-cifar", "penalty-cifar", "penalty-cifar100", "penalty-cifar-small",
                 "penalty-cifar-activations", "spectral-cifar"):   # CIFAR: a GPU job, paper only
        assert get("experiment", name).profiles == ("paper",)


# ---------------------------------------------------------------------------
# every profile of every experiment, end to end


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name,profile", [pytest.param(n, p, id=f"{n}-{p}", marks=[pytest.mark.slow] if n in SLOW
                                                       else []) for n, p in CASES])
def test_profile_runs_under_smoke(name, profile, tmp_path, user_data):
    rep = reproduce(name, profile, root=tmp_path, progress=False, log=lambda m: None, smoke=True)
    smoke = tmp_path / SMOKE
    assert rep.path == smoke / "reports" / name / "report.md" and rep.profile == f"{profile}+smoke"
    text = rep.path.read_text()
    assert f"Profile: `{profile}+smoke`" in text and "Smoke run (`--smoke`)" in text
    assert f"advgeom reproduce {name} --profile {profile}" in text and "--smoke" in text
    assert rep.outcome.comparisons
    # issue 27: every report has its settings table, each setting with its source
    assert "## Settings and their sources" in text and "without a declared source" not in text
    for fig in rep.outcome.figures:
        assert smoke in fig.parents and fig.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [SMOKE]   # nothing outside root/smoke
    store = ResultStore(smoke / "results.sqlite")
    assert rep.store_path == smoke / "results.sqlite"
    assert store.runs()[-1]["command"].endswith("--smoke")
    rows = store.query(experiment=name)
    assert all(r.profile == f"{profile}+smoke" for r in rows)
    if name not in MAYBE_ROWS:
        assert bool(rows) == (name not in NO_ROWS)


# ---------------------------------------------------------------------------
# the caps


@pytest.mark.parametrize("name", names("attack") + sorted(ALIASES))
def test_cap_spec_on_every_attack(name, tiny_model):
    model, source, x, y = tiny_model
    info = getattr(get("attack", AttackSpec(name).base_name), "info", None)
    given = {"source_model": source} if info is not None and "source_model" in info.needs else {}
    spec = AttackSpec(name, given)
    capped = cap_spec(spec)
    assert capped.label == spec.label and capped.name == spec.name
    kw = capped.call_kwargs()
    for key, cap in SMOKE_CAPS.items():
        if key in kw and key != "num_targets":
            assert kw[key] <= cap, (key, kw[key])
    if "num_targets" in kw and kw["num_targets"]:
        assert kw["num_targets"] <= SMOKE_CAPS["num_targets"]
    if "steps" in kw:    # explicit, not the attack's default
        assert "steps" in capped.kwargs
    norm = info.norms[0] if info is not None else "linf"
    adv = capped.fn(model, x, y, eps=0.1 if norm == "linf" else 0.5, norm=norm,
                    generator=make_generator(0), **kw)
    assert adv.shape == x.shape and torch.isfinite(adv).all()


def test_cap_spec_keeps_given_small_budgets_and_caps_defaults():
    assert cap_spec("apgd-t").call_kwargs()["num_targets"] == 2                   # default 9
    assert cap_spec("multi_target").call_kwargs()["num_targets"] == 2             # default: every class
    assert cap_spec("fab:num_targets=0").call_kwargs()["num_targets"] == 0        # untargeted stays so
    assert "steps" not in cap_spec("fgsm").kwargs                                 # fgsm takes no steps
    cw = cap_spec("cw_l2:steps=1000,step_size=0.01,search_steps=9")
    assert (cw.kwargs["steps"], cw.kwargs["search_steps"], cw.label) == \
        (2, 1, "cw_l2:search_steps=9,step_size=0.01,steps=1000")
    inner = cap_spec(AttackSpec("transfer", {"source_model": nn.Linear(2, 2), "attack": "apgd-t"}))
    assert inner.kwargs["steps"] == 2 and inner.kwargs["attack_kwargs"] == {"num_targets": 2}
    assert parse_attack_spec(cap_spec_text("pgd:steps=40,step_size=0.01")).kwargs["steps"] == 2


def test_smoke_config_caps_training():
    cfg = AT.at_configs("paper")["pgd_at"]                     # 100k steps, batch 50, PGD-40 crafting
    s = smoke_config(cfg)
    assert (s.iterations, s.batch_size, s.checkpoint_every) == (SMOKE_STEPS, min(SMOKE_BATCH, 50), SMOKE_STEPS)
    assert parse_attack_spec(s.objective_kwargs["attack"]).kwargs["steps"] == SMOKE_CAPS["steps"]
    assert (s.model, s.dataset, s.objective, s.objective_kwargs["eps"]) == (cfg.model, cfg.dataset, cfg.objective,
                                                                          cfg.objective_kwargs["eps"])
    assert config_hash(s) != config_hash(cfg)
    fast = smoke_config(AT.at_configs("cpu")["fgsm_at"])       # monitor on: every step, a few points
    assert (fast.monitor.every, fast.monitor.size) == (min(590, SMOKE_STEPS), SMOKE_MONITOR)
    assert parse_attack_spec(fast.monitor.attack).kwargs["steps"] == SMOKE_CAPS["steps"]
    trades = smoke_config(AT.at_configs("paper")["trades"])    # its own 40 crafting steps
    assert trades.objective_kwargs["steps"] == SMOKE_CAPS["steps"]
    from advgeom.experiments import hyper_mnist as HM
    from advgeom.experiments import spectral as SP

    wrapped = smoke_config(HM.hyper_config("dsphere", "pgd", "paper")).objective_kwargs["base_kwargs"]
    assert parse_attack_spec(wrapped["attack"]).kwargs["steps"] == SMOKE_CAPS["steps"]
    s_mnist = SP.settings("spectral-mnist", "paper")
    snr = SP.finetune_config(s_mnist, "global_snr", {"lam": 0.1})  # default init_iters 50
    assert smoke_config(snr).objective_kwargs["init_iters"] == SMOKE_CAPS["steps"]


def test_context_caps_only_under_smoke(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    real = Context("demo", "paper", tmp_path, store, show_progress=False)
    smoke = Context("demo", "paper", tmp_path / SMOKE, ResultStore(tmp_path / "s.sqlite"), show_progress=False,
                    smoke=True)
    cfg = TrainConfig(dataset="spheres", dataset_kwargs={"d": 4, "n": 64}, model="relu_mlp",
                      model_kwargs={"input_dim": 4, "width": 8, "depth": 1}, objective="bce", batch_size=16,
                      iterations=50, checkpoint_every=50)
    assert real.config(cfg) is cfg and smoke.config(cfg) == smoke_config(cfg)
    assert (real.label, smoke.label) == ("paper", "paper+smoke")
    assert (real.size(10_000, 5), smoke.size(10_000, 5), smoke.size(None, 5), smoke.size(3, 5)) == (10_000, 5, 5, 3)
    assert (real.first((1, 2, 3), 2), smoke.first((1, 2, 3), 2)) == ((1, 2, 3), (1, 2))
    assert real.smoke_kwargs(steps=2) == {} and smoke.smoke_kwargs(steps=2) == {"steps": 2}
    settings = {"n": 1000, "grid": (1, 2, 3), "other": 7}
    assert real.capped(settings, n=2, grid=1) is settings
    assert smoke.capped(settings, n=2, grid=1) == {"n": 2, "grid": (1,), "other": 7}
    trained = smoke.fit(cfg)
    assert trained.config.iterations == SMOKE_STEPS and trained.history[-1]["step"] == SMOKE_STEPS
    assert SMOKE in trained.path.parts


def test_smoke_evaluation_caps_points_and_attacks(tmp_path, tiny_model):
    model, _, x, y = tiny_model
    ctx = Context("demo", "quick", tmp_path, ResultStore(tmp_path / "s.sqlite"), show_progress=False, smoke=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ctx.evaluate(model, (x, y), ["pgd:steps=100,step_size=0.01", "apgd-t"], [0.1], n=12)
        suite = ctx.suite(model, (x, y), [0.1], n=12)
    assert res.n == SMOKE_POINTS and suite.n == SMOKE_POINTS
    assert [s.kwargs["steps"] for s in res.specs] == [2, 2] and res.specs[1].kwargs["num_targets"] == 2
    assert res.specs[0].label == "pgd:step_size=0.01,steps=100"          # the experiment's label, kept
    assert all(s.call_kwargs().get("steps", 0) <= 2 for s in suite.specs)
    with torch.no_grad():
        correct = model(x[:32]).argmax(1) == y[:32]
    if int(correct.sum()) >= SMOKE_POINTS:     # the attacked points are clean-correct ones
        assert bool(res.clean_correct.all())
    assert {r.profile for r in res.rows} == {"quick+smoke"}


def test_smoke_refuses_a_store_of_ones_own(tmp_path):
    with pytest.raises(AdvgeomError, match="--smoke keeps its rows apart"):
        reproduce("spheres-dimension", "quick", root=tmp_path, store_path=tmp_path / "x.sqlite", smoke=True)


# ---------------------------------------------------------------------------
# the command line


def test_cli_takes_smoke_everywhere_it_runs_work(tmp_path):
    from typer.testing import CliRunner

    from advgeom.cli import app

    run = CliRunner()
    out = run.invoke(app, ["reproduce", "spheres-dimension", "--smoke", "--root", str(tmp_path), "--no-progress"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / SMOKE / "reports" / "spheres-dimension" / "report.md").is_file()
    assert "spheres-dimension (quick+smoke)" in out.output
    reports = ResultStore(tmp_path / SMOKE / "results.sqlite")
    assert reports.runs()[-1]["command"].endswith("--smoke")
    out = run.invoke(app, ["reproduce", "spheres-dimension", "--smoke", "--root", str(tmp_path),
                           "--db", str(tmp_path / "x.sqlite")])
    assert out.exit_code == 2 and "--smoke keeps its rows apart" in out.output
    out = run.invoke(app, ["train", "--smoke", "--root", str(tmp_path), "--no-progress", "dataset=spheres",
                           "dataset_kwargs.d=4", "model=relu_mlp", "model_kwargs.input_dim=4",
                           "objective=bce", "iterations=500"])
    assert out.exit_code == 0, out.output
    assert f"--smoke: {SMOKE_STEPS} training step(s)" in out.output
    assert list((tmp_path / SMOKE / "train").iterdir())
    out = run.invoke(app, ["evaluate", "--smoke", "--experiment", "demo", "--root", str(tmp_path),
                           "--no-progress", "--attacks", "pgd:steps=100,apgd-t", "--eps", "0.3"])
    assert out.exit_code == 0, out.output
    assert f"--smoke: {SMOKE_POINTS} point(s)" in out.output
    rows = ResultStore(tmp_path / SMOKE / "results.sqlite").query(experiment="demo")
    assert rows and {r.profile for r in rows} == {"quick+smoke"} and {r.n for r in rows} == {SMOKE_POINTS}
    assert not (tmp_path / "results.sqlite").exists() and not (tmp_path / "train").exists()


# ---------------------------------------------------------------------------
# fixtures


class _Tiny(nn.Module):
    """Conv -> ReLU -> linear on 1x8x8 images, 5 classes."""

    num_classes = 5

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def tiny_model():
    """(model, source model, 40 images 1x8x8, labels)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, source = _Tiny().eval(), _Tiny().eval()
    g = make_generator(0)
    x = torch.rand(40, 1, 8, 8, generator=g) * 0.8 + 0.1
    y = torch.randint(0, 5, (40,), generator=g)
    return model, source, x, y
