"""Experiment ``at-mnist``: the adversarial-training baselines on MNIST at eps 0.3 (linf)
next to their published numbers: natural training, PGD-AT (Madry et al. 2018), fast
FGSM-AT (Wong et al. 2020), TRADES (Zhang et al. 2019), MART (Wang et al. 2020) and
MMC with adversarial training (Pang et al. 2020).

Each model is attacked with the papers' PGD-40 and PGD-100 (step 0.01), APGD-CE,
APGD-T (DLR, 9 targets) and Square, with the per-sample worst case over all of them.

Profiles:
- ``paper``: the official recipes (PGD-AT: Madry's CNN, Adam 1e-4, batch 50, 100k
  steps, PGD-40 of 0.01; TRADES/MART/MMC/natural: SmallCNN, SGD 0.01 momentum 0.9,
  batch 128, 100 epochs, lr / 10 at epochs 55, 75, 90; fast FGSM-AT: Wong et al.'s
  network and recipe, alpha 0.375, 10 epochs, batch 100, Adam with their cyclic rate
  peaking at 5e-3) on the 10,000 test points; a GPU job (hours).
- ``cpu``: the same architectures, objectives, eps and attacks, trained on 2 CPU cores
  with the compressed schedules of :data:`CPU` (each change an assumption the report
  names); PGD-40, PGD-100, APGD-CE and APGD-T (3 targets) on the first 1,000 test points
  and AutoAttack's standard suite on the first 200 of them.
- ``quick``: the same defenses scaled to 2 CPU cores (see :data:`QUICK`), 200 test points.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from advgeom.data import load
from advgeom.eval.report import format_checks
from advgeom.experiments.base import Comparison, Context, Outcome, experiment
from advgeom.experiments.settings import Source, assumption, code, paper
from advgeom.results.plots import plot_curves
from advgeom.train import TrainConfig

EPS = 0.3
PGD = "pgd:steps={steps},step_size={step}"
DEFENSES = ("natural", "pgd_at", "fgsm_at", "trades", "mart", "mmc_at")

# What the quick profile scales down, in one place (the report prints it).
QUICK = dict(model="madry_mnist_cnn", model_kwargs={"widths": [16, 32], "fc_dim": 256},
             iterations=600, batch_size=64, lr=1e-3, craft_steps=10, craft_step=0.05,
             warmup=0.3, n=200, square=1000, curve_eps=(0.1, 0.2, 0.3))
PAPER = dict(n=10_000, square=5000, curve_eps=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3))
# The cpu profile: each defense's own architecture and objective; every schedule the
# piecewise-linear "cyclic" rate of Wong et al. (2020) (0 -> peak at 40% -> 0), the crafting
# PGD-40 of step 0.01 replaced by PGD-10 of step 0.04 (the same path length, 0.4).
CPU = dict(epochs=10, batch_size=128, craft_steps=10, craft_step=0.04, adam_peak=1e-3,
           sgd_peak=0.05, natural_epochs=5, n=1000, suite_n=200, apgd_t_targets=3,
           curve_eps=(0.1, 0.2, 0.3))
# Pang et al.'s MMC code: Adam at 1e-3 (SGD at TRADES's momentum recipe sent the MMC loss to
# NaN, or its features to the origin, within the first epochs of the cpu schedule)
MMC_ADAM_LR = 1e-3
CPU_ASSUMPTIONS = (
    "training length: 10 epochs per adversarially trained model (natural: 5) instead of 83-100, "
    "to fit 2 hours on 2 CPU cores; Wong et al. (2020) reach their published MNIST robustness "
    "in 10 epochs with this schedule",
    "learning rate: the piecewise-linear cyclic rate of Wong et al. (2020; 0 at the start, the peak "
    "at 40% of training, 0 at the end) instead of each recipe's constant or step schedule; peak "
    "1e-3 for Adam (PGD-AT, whose recipe's constant is 1e-4; MMC-AT, at its code's 1e-3) and 0.05 "
    "for SGD with momentum 0.9 (natural, TRADES, MART; the recipes' 0.01), raised with the shorter schedule as in "
    "super-convergence (Smith & Topin 2019)",
    "batch size 128 for PGD-AT (Madry et al.: 50)",
    "crafting: PGD-10 of step 0.04 from a random start instead of PGD-40 of step 0.01 (the same "
    "path length; Wong et al. 2020 show that even one step from a random start reaches the "
    "PGD-trained robustness on MNIST at eps 0.3)",
    "evaluation: APGD-T with 3 target classes (AutoAttack: 9) on the 1,000 points; the standard "
    "suite keeps its 9 targets on its 200 points",
)

# ---------------------------------------------------------------------------
# training configurations


def _paper_config(defense: str) -> TrainConfig:
    """The official recipe of each defense (assumptions named in the docstring)."""
    # train_trades_mnist.py drops the rate at epochs 55, 75 and 90 in intent, but its
    # if/elif order applies only the first drop: 0.001 from its 55th epoch (index 54) on.
    trades_recipe = dict(dataset="mnist", model="small_cnn", optimizer="sgd", lr=0.01, momentum=0.9,
                         batch_size=128, epochs=100, milestones=(54,), schedule_unit="epoch",
                         checkpoint_every=2000)
    pgd40 = PGD.format(steps=40, step=0.01) + ",early_stop=false"
    if defense == "pgd_at":
        return TrainConfig(dataset="mnist", model="madry_mnist_cnn", objective="pgd_at",
                           objective_kwargs={"eps": EPS, "attack": pgd40}, optimizer="adam",
                           lr=1e-4, batch_size=50, iterations=100_000, checkpoint_every=2000)
    if defense == "fgsm_at":
        return _fast_at_config()
    objective, kw = {"natural": ("ce", {}),
                     "trades": ("trades", {"eps": EPS, "beta": 1.0, "steps": 40, "step_size": 0.01}),
                     "mart": ("mart", {"eps": EPS, "beta": 6.0, "steps": 40, "step_size": 0.01}),
                     "mmc_at": ("mmc", {"adversarial": True, "eps": EPS, "attack": pgd40})}[defense]
    cfg = TrainConfig(objective=objective, objective_kwargs=kw, **trades_recipe)
    if defense == "mmc_at":
        # Pang et al.'s code trains MMC with Adam at 1e-3: the squared-distance loss (about
        # 100 at the start) diverges under the SGD recipe's momentum step
        cfg = replace(cfg, model="mmc", model_kwargs={"base": "small_cnn", "dim": 256},
                      optimizer="adam", lr=MMC_ADAM_LR)
    return cfg


def _fast_at_config() -> TrainConfig:
    """Wong et al. (2020), MNIST/train_mnist.py defaults: their network, FGSM from a uniform
    start with step 0.375 at eps 0.3, its gradient taken at the unclipped start as that
    script does, Adam with the cyclic rate (peak 5e-3 at 2/5 of 10 epochs), batch 100. The
    monitor only records the robust accuracy (no early stopping: the official recipe has
    none)."""
    return TrainConfig(dataset="mnist", model="fast_at_mnist_net", objective="fgsm_at",
                       objective_kwargs={"eps": EPS, "alpha": 0.375, "start": "unclipped"},
                       optimizer="adam", lr=5e-3,
                       batch_size=100, epochs=10, schedule="piecewise", lr_knots=(0.0, 0.4, 1.0),
                       lr_factors=(0.0, 1.0, 0.0), checkpoint_every=590,
                       monitor={"every": 590, "size": 1000, "eps": EPS})


def _cpu_config(defense: str) -> TrainConfig:
    """The cpu profile's recipe of ``defense`` (see :data:`CPU` and :data:`CPU_ASSUMPTIONS`)."""
    if defense == "fgsm_at":
        return _fast_at_config()
    c = CPU
    craft = PGD.format(steps=c["craft_steps"], step=c["craft_step"]) + ",early_stop=false"
    own = {"eps": EPS, "steps": c["craft_steps"], "step_size": c["craft_step"]}
    objective, kw = {"natural": ("ce", {}),
                     "pgd_at": ("pgd_at", {"eps": EPS, "attack": craft}),
                     "trades": ("trades", {**own, "beta": 1.0}),
                     "mart": ("mart", {**own, "beta": 6.0}),
                     "mmc_at": ("mmc", {"adversarial": True, "eps": EPS, "attack": craft})}[defense]
    cyclic = dict(schedule="piecewise", lr_knots=(0.0, 0.4, 1.0), lr_factors=(0.0, 1.0, 0.0))
    if defense == "pgd_at":
        opt = dict(model="madry_mnist_cnn", optimizer="adam", lr=c["adam_peak"])
    elif defense == "mmc_at":
        opt = dict(model="mmc", model_kwargs={"base": "small_cnn", "dim": 256}, optimizer="adam",
                   lr=MMC_ADAM_LR)
    else:
        opt = dict(model="small_cnn", optimizer="sgd", lr=c["sgd_peak"], momentum=0.9)
    epochs = c["natural_epochs"] if defense == "natural" else c["epochs"]
    # the monitor holds out the last 1,000 training points: 59,000 left, 460 steps an epoch
    monitor = {} if defense == "natural" else {"every": 460, "size": 1000, "eps": EPS}
    return TrainConfig(dataset="mnist", objective=objective, objective_kwargs=kw,
                       batch_size=c["batch_size"], epochs=epochs, checkpoint_every=100,
                       monitor=monitor, **cyclic, **opt)


def at_sources(profile: str) -> dict[str, Source]:
    """Where each training setting of :func:`at_configs` comes from (the report's table)."""
    madry, trades = "MadryLab/mnist_challenge", "yaodongyu/TRADES train_trades_mnist.py"
    fast = "locuslab/fast_adversarial MNIST/train_mnist.py"
    mmc_code = "P2333/Max-Mahalanobis-Training"
    no_mnist = "its authors publish no MNIST recipe: TRADES's MNIST recipe (the closest published one)"
    src: dict[str, Source] = {
        "dataset": paper("MNIST, the 60,000 training images (every paper)"),
        "train_size": paper("all training images"),
        "weight_decay": code(f"none in {madry} and {trades}; {fast} uses none"),
        "precision": assumption("fp32, the frameworks' default in every official code"),
        "natural.objective": paper("cross-entropy (the undefended baseline of every paper)"),
        "pgd_at.objective": paper("Madry et al. 2018, Section 2: the saddle-point objective, the loss at the PGD point"),
        "trades.objective": paper("Zhang et al. 2019, Section 4: CE + beta * KL(f(x), f(x'))"),
        "mart.objective": paper("Wang et al. 2020, Section 3: boosted CE on the adversarial point + beta * KL * (1 - p_y)"),
        "mmc_at.objective": paper("Pang et al. 2020, Section 3: the MMC loss, trained on PGD points"),
        "fgsm_at.objective": paper("Wong et al. 2020, Algorithm 3: FGSM from a uniform random start"),
        "natural.model": assumption("TRADES's SmallCNN, the architecture of the three SGD defenses"),
        "pgd_at.model": code(f"{madry} model.py (convolutions of 32 and 64, FC 1024)"),
        "trades.model": code("yaodongyu/TRADES models/small_cnn.py"),
        "mart.model": assumption(f"MART: {no_mnist}, SmallCNN"),
        "mmc_at.model": assumption("MMC head (Pang et al. 2020, Section 3) on TRADES's SmallCNN for comparability"),
        "mmc_at.model_kwargs": assumption("MMC centers in the SmallCNN's 256-dim penultimate space; "
                                          "the paper's C_MM = 10 is the head's default"),
        "fgsm_at.model": code(f"{fast} (two stride-2 convolutions of 16 and 32, FC 100)"),
        "fgsm_at.objective_kwargs": code(f"{fast}: eps 0.3, alpha 0.375, the FGSM gradient at the "
                                         "unclipped random start (its CIFAR-10 code clips it first)"),
        "fgsm_at.optimizer": code(f"{fast}: Adam"), "fgsm_at.lr": code(f"{fast}: lr_max 5e-3"),
        "fgsm_at.batch_size": code(f"{fast}: batch 100"), "fgsm_at.epochs": code(f"{fast}: 10 epochs"),
        "fgsm_at.schedule": code(f"{fast}: piecewise-linear cyclic rate"),
        "fgsm_at.lr_knots": code(f"{fast}: 0 -> lr_max at 2/5 of training -> 0"),
        "fgsm_at.lr_factors": code(f"{fast}: 0 -> lr_max at 2/5 of training -> 0"),
        "fgsm_at.monitor": assumption("records the held-out robust accuracy (Wong et al.'s catastrophic-"
                                      "overfitting check) without selecting weights; holds out 1,000 points"),
    }
    if profile == "paper":
        sgd = {"optimizer": code(f"{trades}: SGD"), "lr": code(f"{trades}: 0.01"),
               "momentum": code(f"{trades}: 0.9"), "batch_size": code(f"{trades}: 128"),
               "epochs": code(f"{trades}: 100 epochs"),
               "milestones": code(f"{trades}: adjust_learning_rate, whose elif order applies only "
                                  "the first drop (lr/10 from epoch 55)"),
               "gamma": code(f"{trades}: lr/10"), "schedule_unit": code(f"{trades}: per epoch"),
               "schedule": code(f"{trades}: step decay"),
               "mart.objective_kwargs": assumption(f"MART: {no_mnist} with MART's beta 6 "
                                                   "(YisenWang/MART train_wideresnet.py)"),
               "mmc_at.objective_kwargs": assumption(f"MMC-AT: {no_mnist}: PGD-40 of step 0.01 at eps 0.3"),
               "trades.objective_kwargs": code(f"{trades}: eps 0.3, 40 steps of 0.01, beta 1.0"),
               "natural.optimizer": assumption("TRADES's SGD recipe, as the SGD defenses it is compared with")}
        sgd.update({f"{d}.batch_size": assumption(f"{d.split('_')[0].upper()}: {no_mnist}: batch 128")
                    for d in ("mart", "mmc_at")})
        src.update(sgd)
        for d in ("mart", "natural"):
            src[f"{d}.optimizer"] = assumption(f"{no_mnist if d != 'natural' else 'the baseline'}: SGD as in {trades}")
        src.update({"mmc_at.optimizer": code(f"{mmc_code} train.py: Adam (TRADES's SGD recipe diverges on "
                                             "the MMC loss)"),
                    "mmc_at.lr": code(f"{mmc_code} README: 1e-3")})
        src.update({"pgd_at.schedule": code(f"{madry} train.py: a constant rate"),
                    "pgd_at.optimizer": code(f"{madry} train.py: Adam"), "pgd_at.lr": code(f"{madry} train.py: 1e-4"),
                    "pgd_at.batch_size": code(f"{madry} config.json: 50"),
                    "pgd_at.iterations": code(f"{madry} config.json: 100,000 steps"),
                    "pgd_at.objective_kwargs": code(f"{madry} config.json: eps 0.3, k 40, a 0.01, random start")})
        return src
    cpu = "cpu profile, to fit 2 hours on 2 CPU cores (report assumptions)"
    if profile == "cpu":
        src.update({
            "optimizer": code(f"{trades}: SGD"), "momentum": code(f"{trades}: 0.9"),
            "lr": assumption(f"peak 0.05 of the cyclic rate (the recipe's constant 0.01), raised with the shorter schedule: {cpu}"),
            "batch_size": code(f"{trades}: 128"),
            "epochs": assumption(f"10 epochs (natural 5) instead of 100: {cpu}; Wong et al. 2020 reach their "
                                 "MNIST robustness in 10"),
            "schedule": assumption(f"Wong et al. 2020's cyclic rate instead of the recipes' step or constant rate: {cpu}"),
            "lr_knots": assumption("Wong et al. 2020: the peak at 2/5 of training"),
            "lr_factors": assumption("Wong et al. 2020: 0 -> peak -> 0"),
            "monitor": assumption("records the robust accuracy on 1,000 held-out training points every epoch "
                                  "(no selection): evidence of the trend"),
            "objective_kwargs": assumption(f"PGD-10 of step 0.04 (the same path length as the recipes' 40 of "
                                           f"0.01) at eps 0.3: {cpu}; TRADES beta 1 ({trades}), MART beta 6 "
                                           "(YisenWang/MART train_wideresnet.py)"),
            "pgd_at.optimizer": code(f"{madry} train.py: Adam"),
            "pgd_at.lr": assumption(f"peak 1e-3 of the cyclic rate (the recipe's constant 1e-4): {cpu}"),
            "pgd_at.batch_size": assumption(f"128 (the recipe's 50): {cpu}"),
            "natural.optimizer": assumption("TRADES's SGD recipe, as the SGD defenses it is compared with"),
            "mart.optimizer": assumption(f"MART: {no_mnist}: SGD"),
            **{f"{d}.batch_size": assumption(f"{d.split('_')[0].upper()}: {no_mnist}: batch 128")
               for d in ("mart", "mmc_at")},
            "mmc_at.optimizer": code(f"{mmc_code} train.py: Adam (SGD at the peak 0.05, momentum 0.9, "
                                     "sent the MMC loss to NaN in the first epoch)"),
            "mmc_at.lr": assumption(f"peak 1e-3 of the cyclic rate ({mmc_code}'s constant 1e-3): {cpu}"),
        })
        return src
    q = "quick profile: a smoke-sized run (minutes on 2 CPU cores), not the paper's setting"
    src.update({k: assumption(q) for k in ("model", "model_kwargs", "optimizer", "lr", "batch_size",
                                           "iterations", "objective_kwargs", "monitor", "schedule")})
    for d in DEFENSES:
        src.pop(f"{d}.model", None), src.pop(f"{d}.objective_kwargs", None), src.pop(f"{d}.monitor", None)
        for k in ("optimizer", "lr", "batch_size", "epochs", "schedule", "lr_knots", "lr_factors", "model_kwargs"):
            src.pop(f"{d}.{k}", None)
    return src


def _quick_config(defense: str) -> TrainConfig:
    q = QUICK
    craft = PGD.format(steps=q["craft_steps"], step=q["craft_step"]) + ",early_stop=false"
    own = {"eps": EPS, "steps": q["craft_steps"], "step_size": q["craft_step"], "warmup": q["warmup"]}
    objective, kw = {
        "natural": ("ce", {}),
        "pgd_at": ("pgd_at", {"eps": EPS, "attack": craft, "warmup": q["warmup"]}),
        "fgsm_at": ("fgsm_at", {"eps": EPS, "warmup": q["warmup"]}),
        "trades": ("trades", {**own, "beta": 1.0}),
        "mart": ("mart", {**own, "beta": 6.0}),
        "mmc_at": ("mmc", {"adversarial": True, "eps": EPS, "attack": craft, "warmup": q["warmup"]}),
    }[defense]
    model, mkw = q["model"], dict(q["model_kwargs"])
    if defense == "mmc_at":
        model, mkw = "mmc", {"base": q["model"], "base_kwargs": mkw, "dim": 64}
    monitor = {"every": 100, "size": 256, "eps": EPS, "keep_best": defense == "fgsm_at"}
    return TrainConfig(dataset="mnist", model=model, model_kwargs=mkw, objective=objective,
                       objective_kwargs=kw, optimizer="adam", lr=q["lr"], batch_size=q["batch_size"],
                       iterations=q["iterations"], checkpoint_every=100, monitor=monitor)


def at_configs(profile: str) -> dict[str, TrainConfig]:
    """``{defense label: TrainConfig}`` of a profile."""
    make = {"paper": _paper_config, "cpu": _cpu_config, "quick": _quick_config}[profile]
    return {d: make(d) for d in DEFENSES}


# ---------------------------------------------------------------------------
# the experiment


def _training_seconds(trained: Any) -> float:
    """Wall time of training as its history recorded it (seconds since the run or its last
    resume started; 0 for a run loaded from the cache without history)."""
    return float(trained.history[-1].get("seconds", 0.0)) if trained.history else 0.0


def _attacks(profile: str) -> list[str]:
    """The papers' PGD-40 and PGD-100, APGD-CE, APGD-T and (not in the cpu profile, whose
    Square runs in the standard suite on its subset) Square."""
    pgd = [PGD.format(steps=40, step=0.01), PGD.format(steps=100, step=0.01), "apgd-ce"]
    if profile == "cpu":
        return pgd + [f"apgd-t:num_targets={CPU['apgd_t_targets']}"]
    square = (PAPER if profile == "paper" else QUICK)["square"]
    return pgd + ["apgd-t", f"square:steps={square}"]


def _published(ref: dict[str, Any], defense: str) -> dict[str, float | None]:
    row = ref.get(defense, {})
    return {k: row.get(k) for k in ("clean", "pgd40", "best")}


def _record_settings(ctx: Context, settings: dict[str, Any], attacks: list[str]) -> None:
    """The evaluation settings and their sources, for the report's table."""
    scaled = {"cpu": "the cpu profile on 2 CPU cores (at least 1,000 points)",
              "quick": "quick profile: a smoke-sized run"}.get(ctx.profile)
    ctx.setting("eps (linf)", EPS, paper("0.3 on MNIST in Madry et al. 2018, Zhang et al. 2019 and Wong et al. 2020"))
    ctx.setting("test points", settings["n"], assumption(f"the first {settings['n']} test images: {scaled}")
                if scaled else paper("the 10,000 MNIST test images"))
    ctx.setting("attacks", attacks, paper("PGD-40 and PGD-100 of step 0.01: Madry et al. 2018 (MadryLab/"
                                          "mnist_challenge config.json: k 40, a 0.01) and Zhang et al. 2019; "
                                          "APGD-CE, APGD-T" + (" (9 targets), Square" if ctx.profile != "cpu" else "")
                                          + ": Croce & Hein 2020 (AutoAttack)"))
    if ctx.profile == "cpu":
        ctx.setting("APGD-T targets", CPU["apgd_t_targets"],
                    assumption("3 target classes instead of AutoAttack's 9 on the 1,000 points, to fit 2 CPU cores; "
                               "the standard suite keeps 9"))
        ctx.setting("standard suite points", settings["suite_n"],
                    assumption("AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square) on the first 200 "
                               "of the points: 2 CPU cores"))
    if ctx.profile != "cpu":
        ctx.setting("Square queries", settings["square"], paper("AutoAttack's 5,000 (Croce & Hein 2020)")
                    if ctx.profile == "paper" else assumption(scaled or ""))
    ctx.setting("eps curve", settings["curve_eps"], assumption("a few radii up to the papers' 0.3 (figure only)"))


@experiment("at-mnist", title="Adversarial-training baselines on MNIST, eps 0.3 (linf)",
            paper="(baselines of three papers)", reference="adversarial_training.mnist",
            models=at_configs, profiles=("quick", "cpu", "paper"), sources=at_sources,
            expected={"quick": "about 17 minutes on 2 CPU cores (results/at-mnist: 1024 s)",
                      "cpu": "about 6-7 hours on 2 idle CPU cores, estimated from step timings "
                             "(training: natural and fast FGSM-AT a few minutes each, the four PGD-style "
                             "defenses about 65-75 minutes each; evaluation 15-20 minutes a model); "
                             "RUN.md gives the measured times",
                      "paper": "GPU hours (PGD-AT: 100,000 steps of PGD-40; TRADES, MART, MMC-AT: "
                               "100 epochs of PGD-40)"})
def at_mnist(ctx: Context) -> Outcome:
    """PGD-AT, fast FGSM-AT, TRADES, MART and MMC-AT against natural training."""
    settings = {"paper": PAPER, "cpu": CPU, "quick": QUICK}[ctx.profile]
    test = load("mnist", "test")
    ref = ctx.reference("adversarial_training.mnist")
    attacks = _attacks(ctx.profile)
    _record_settings(ctx, settings, attacks)
    comps: list[Comparison] = []
    notes: list[str] = []
    curves: dict[str, list[float]] = {}
    monitor_curves: dict[str, list[tuple[int, float]]] = {}
    for defense, cfg in at_configs(ctx.profile).items():
        trained = ctx.fit(cfg)
        model = trained.model.eval()
        common = dict(n=settings["n"], model_name=cfg.model, defense=defense, dataset="mnist")
        # the eps curve with the two cheap gradient attacks, then all five at eps 0.3 (last,
        # so the stored worst case at 0.3 is the one over all five)
        curve = ctx.evaluate(model, test, attacks[:1] + ["apgd-ce"], list(settings["curve_eps"]), **common)
        res = ctx.evaluate(model, test, attacks, [EPS], **common)
        pub = _published(ref, defense)
        label = [spec.label for spec in res.specs]  # canonical labels, in the order given
        n = res.n
        comps += [
            Comparison(f"{defense}: clean", res.percent("none"), pub["clean"], n=n),
            Comparison(f"{defense}: PGD-40 (0.01)", res.percent(label[0], EPS), pub["pgd40"], n=n),
            Comparison(f"{defense}: PGD-100 (0.01)", res.percent(label[1], EPS), None, n=n),
            Comparison(f"{defense}: APGD-CE", res.percent(label[2], EPS), None, n=n),
            Comparison(f"{defense}: APGD-T" + (f" ({CPU['apgd_t_targets']} targets)" if ctx.profile == "cpu"
                                               else ""), res.percent(label[3], EPS), None, n=n),
        ]
        if ctx.profile == "cpu":
            suite = ctx.suite(model, test, [EPS], **{**common, "n": settings["suite_n"]})
            comps += [
                Comparison(f"{defense}: worst case (PGD-40, PGD-100, APGD-CE, APGD-T)",
                           res.percent("worst_case", EPS), pub["best"], n=n,
                           note="paper: its strongest reported attack"),
                Comparison(f"{defense}: standard suite (APGD-CE, APGD-T, FAB-T, Square), first "
                           f"{suite.n} points", suite.percent("worst_case", EPS), pub["best"], n=suite.n),
            ]
            notes += [f"{defense}: {line.strip()}" for line in format_checks(suite.checks).splitlines()
                      if line.strip()]
        else:
            comps += [
                Comparison(f"{defense}: Square", res.percent(label[4], EPS), None, n=n),
                Comparison(f"{defense}: worst case (all five)", res.percent("worst_case", EPS), pub["best"],
                           n=n, note="paper: its strongest reported attack"),
            ]
        curves[defense] = [curve.percent("worst_case", e) for e in settings["curve_eps"]]
        if ctx.profile == "cpu":
            notes.append(f"{defense}: {cfg.model}, {cfg.objective} {cfg.objective_kwargs}, "
                         f"{cfg.optimizer} peak lr {cfg.lr:g}, {cfg.epochs} epochs of batch "
                         f"{cfg.batch_size}; trained in {_training_seconds(trained):.0f} s")
        mon = [(h["step"], h["monitor_robust"]) for h in trained.history if "monitor_robust" in h]
        if mon:
            monitor_curves[defense] = mon
            notes.append(f"{defense}: monitored robust accuracy (PGD-10, held-out) at steps "
                         + ", ".join(f"{s}: {100 * r:.1f}%" for s, r in mon)
                         + f"; final weights from step {trained.selected_step or cfg.iterations}")
        for ev in trained.events:
            notes.append(f"{defense}: {ev['event'].replace('_', ' ')} at step {ev['step']} "
                         f"(robust {100 * ev['robust']:.1f}% after a best of {100 * ev['best_robust']:.1f}%)")
        notes += [f"{defense}: {line.strip()}" for r in (curve, res)
                  for line in format_checks(r.checks).splitlines() if line.strip()]
    eps = list(settings["curve_eps"])
    figs = [plot_curves(eps, curves, ctx.figure_path("robust_accuracy_vs_eps"),
                        title="MNIST: robust accuracy vs eps (worst of PGD-40, APGD-CE)", xlabel="eps (linf)",
                        ylabel="robust accuracy (%)")]
    if monitor_curves:
        steps = [s for s, _ in next(iter(monitor_curves.values()))]
        same = {d: [100 * r for s, r in m] for d, m in monitor_curves.items() if [s for s, _ in m] == steps}
        figs.append(plot_curves(steps, same, ctx.figure_path("monitor_robust_accuracy"),
                                title="Robust accuracy on held-out training points (PGD-10)",
                                xlabel="training step", ylabel="robust accuracy (%)"))
    if ctx.profile == "cpu":
        notes[:0] = [f"assumption: {a}" for a in CPU_ASSUMPTIONS] + [
            "fast FGSM-AT follows Wong et al.'s MNIST recipe as published (network, step 0.375 with the "
            "gradient at the unclipped random start as their MNIST code takes it, cyclic rate peaking "
            "at 5e-3, 10 epochs, batch 100) except that the monitor holds out the last 1,000 training "
            "points; the outcome of that recipe varies widely between runs of one configuration "
            "(seed, thread count: results/fast-at-mnist-runs in the repository), so its row is one draw"]
    if ctx.quick:
        notes.insert(0, "quick profile (scaled to 2 CPU cores): every defense trains "
                     f"{QUICK['model']} {QUICK['model_kwargs']} for {QUICK['iterations']} Adam steps "
                     f"(batch {QUICK['batch_size']}, lr {QUICK['lr']}), crafting with "
                     f"{QUICK['craft_steps']} steps of {QUICK['craft_step']} and eps ramped over the first "
                     f"{int(100 * QUICK['warmup'])}% of training; MMC features: 64 dims; "
                     f"{QUICK['n']} test points; Square {QUICK['square']} queries. The paper profile "
                     "uses the official recipes.")
    notes.append("Published numbers (reference_results.toml [adversarial_training.mnist]) are for the "
                 "authors' own models and attacks; the worst-case row compares with each paper's "
                 "strongest reported attack.")
    return Outcome(comps, figs, notes)
