"""Experiments ``penalty-cifar-small`` and ``penalty-cifar-activations``:
weight-penalization-classification-layer.txt on the small CIFAR-10 network (Carlini &
Wagner's four-convolution net, :func:`advgeom.models.cw.cw_cifar_cnn`), eps 8/255.

- ``penalty-cifar-small``: Table 5 (AdvTraining, MMC and the weight penalty under PGD-20,
  PGD-100, DeepFool, C&W L2 at radius 1 and MTA-100, Table 1's CIFAR settings) with the
  audit (APGD-CE, APGD-T, margin PGD, Square, APGD through a straight-through tanh, the
  per-sample worst case), and Figure 4 from the same training runs: training and test
  accuracy, clean and under PGD-20, after every epoch (the training loop's monitor on the
  first 1,000 training and the first 1,000 test points).
- ``penalty-cifar-activations``: Figure 7, the same curves for the penalty (alpha 100,
  s 0.1) with ReLU, PReLU, LeakyReLU and Tanh features, and each model's final PGD-20
  and worst-case accuracy on the test set (the MNIST counterpart is Figure 6,
  ``penalty-activations``). Its Tanh model is Table 5's penalty model (one cache entry).

Paper profile only (CIFAR-10 comes from a user directory, ``$ADVGEOM_DATA``; ``--smoke``
runs them end to end on CIFAR-shaped files). Training: the penalty as Section 4.2 gives it
(Adam 0.01, 400 epochs); AdvTraining and MMC with their authors' CIFAR-10 recipes moved
onto the small network (Section 4: "hyperparameters ... selected according to the
original literature"): Madry et al.'s cifar10_challenge config (PGD-7 of 2/255, SGD 0.1,
80,000 steps of 128) and Pang et al.'s Max-Mahalanobis-Training code (Adam 0.001, batch
50, 180 epochs), MMC without adversarial training as in ``penalty-mnist``. No data
augmentation for any of them (Section 4.2 names none). Expected GPU time, ``--plan``'s
estimate on full-size data at its stated sustained rates: ``penalty-cifar-small`` 1.9e17
FLOP, about 70 minutes on one A100-class GPU (20 on an H100): training 5.0e16 (AdvTraining's
PGD-7 the most), evaluation 1.4e17 (C&W's 9 x 1000 steps on 10,000 points per model the
most); ``penalty-cifar-activations`` 9.0e16 FLOP, about 30 minutes (10), its Tanh model
shared with Table 5. The ~113 MFLOP network is far from filling a GPU, so wall time may be
a few times longer.
"""
from __future__ import annotations

from typing import Any

from advgeom.attacks.spec import AttackSpec
from advgeom.data import load
from advgeom.data.cifar10 import COUNTS
from advgeom.eval.runner import WORST
from advgeom.experiments import penalty_activations as PA
from advgeom.experiments import penalty_cifar as PC
from advgeom.experiments import penalty_mnist as PM
from advgeom.experiments.base import Comparison, Context, Outcome, experiment
from advgeom.experiments.settings import Source, assumption, code, paper as in_paper
from advgeom.experiments.smoke import SMOKE_POINTS
from advgeom.results.plots import save_figure
from advgeom.train import TrainConfig

EPS, CW_EPS, N = PC.EPS, PC.CW_EPS, PC.N
ROWS = ("adv_training", "mmc", "penalty")      # the keys of [weight_penalty.cifar10_small.rows]
CURVE_POINTS = 1000                            # training and test points of the per-epoch curves
PGD20 = "pgd:steps=20,step_size=0.0031"        # Table 1's CIFAR PGD-20, the attack of Figures 4 and 7
CURVES = ("train_clean", "train_robust", "test_clean", "test_robust")
MADRY = "MadryLab/cifar10_challenge config.json"
MMC_CODE = "P2333/Max-Mahalanobis-Training (the authors' code)"
SMALL_NET = "Section 4.2: the small network of four convolutional layers (Carlini & Wagner 2017, ref. [2]; Table 5)"


def curve_monitor(batch_size: int) -> dict[str, Any]:
    """The training loop's monitor as Figures 4 and 7 need it: PGD-20 at 8/255 once an
    epoch on the first :data:`CURVE_POINTS` training and test points, none held out."""
    return {"every": COUNTS["train"] // batch_size, "size": 0, "attack": PGD20, "eps": EPS,
            "train_points": CURVE_POINTS, "test_points": CURVE_POINTS}


def small_penalty_config(activation: str = "tanh") -> TrainConfig:
    """The penalty (alpha 100, s 0.1) on the small CIFAR-10 network with ``activation`` features."""
    return TrainConfig(dataset="cifar10", model="cw_cifar_cnn", model_kwargs={"feature_activation": activation},
                       objective="weight_penalty", objective_kwargs=dict(PM.PENALTY), optimizer="adam", lr=0.01,
                       batch_size=128, epochs=400, checkpoint_every=2000, monitor=curve_monitor(128))


def table5_configs(profile: str) -> dict[str, TrainConfig]:
    """``{row: TrainConfig}`` of Table 5 (the paper profile only)."""
    PC.paper_only("penalty-cifar-small", profile)
    at = TrainConfig(dataset="cifar10", model="cw_cifar_cnn", objective="pgd_at",
                     objective_kwargs={"eps": EPS, "attack": f"pgd:steps=7,step_size={2 / 255:.6f},early_stop=false"},
                     optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=128, iterations=80_000,
                     milestones=(40_000, 60_000), gamma=0.1, checkpoint_every=2000, monitor=curve_monitor(128))
    mmc = TrainConfig(dataset="cifar10", model="mmc", model_kwargs={"base": "cw_cifar_cnn", "dim": 256},
                      objective="mmc", optimizer="adam", lr=0.001, batch_size=50, epochs=180, milestones=(81, 121),
                      gamma=0.1, schedule_unit="epoch", checkpoint_every=2000, monitor=curve_monitor(50))
    return {"adv_training": at, "mmc": mmc, "penalty": small_penalty_config()}


def activation_configs(profile: str) -> dict[str, TrainConfig]:
    """``{activation: TrainConfig}`` of Figure 7 (the paper profile only)."""
    PC.paper_only("penalty-cifar-activations", profile)
    return {a: small_penalty_config(a) for a in PA.ACTIVATIONS}


def penalty_sources(label: str = "") -> dict[str, Source]:
    """Sources of :func:`small_penalty_config` (Section 4.2, else assumptions), keyed by
    field, or ``label.field`` when ``label`` is given."""
    src = {"dataset": in_paper("Table 5: CIFAR-10, the training set"),
           "train_size": in_paper("Section 4.2: the training samples"),
           "model": in_paper(SMALL_NET),
           "model_kwargs": in_paper("Sections 3.2 and 4.3: tanh features (the saturated activation)"),
           "objective": in_paper("Section 3, eq. (3.8): softmax cross-entropy + alpha ||W W^T - Sigma||"),
           "objective_kwargs": in_paper(PM.PENALTY_SOURCE),
           "optimizer": in_paper("Section 4.2: Adam"), "lr": in_paper("Section 4.2: learning rate 0.01"),
           "epochs": in_paper("Section 4.2: 400 epochs"),
           "schedule": assumption("Section 4.2 gives a learning rate of 0.01 and no decay: constant"),
           "batch_size": assumption(PC.WHY_BATCH),
           "weight_decay": assumption("the paper names no weight decay: none"),
           "precision": assumption("fp32, the frameworks' default; the paper states none"),
           "monitor": assumption(f"Figures 4 and 7 plot training and test accuracy per epoch and do not say on "
                                 f"how many points: PGD-20 (Table 1's step 0.0031) at 8/255 once an epoch on the "
                                 f"first {CURVE_POINTS:,} training points (trained on) and the first "
                                 f"{CURVE_POINTS:,} test points, none held out")}
    return {f"{label}.{k}" if label else k: v for k, v in src.items()}


def table5_sources(profile: str) -> dict[str, Source]:
    """AdvTraining: Madry et al.'s CIFAR-10 code; MMC: Pang et al.'s code; the penalty: Section 4.2."""
    lit = "Section 4: compared methods' hyperparameters 'selected according to the original literature'"
    src = {**penalty_sources(),
           "adv_training.objective": in_paper(f"Section 4.2: AdvTraining (Madry et al. 2018, ref. [17]); {lit}"),
           "adv_training.objective_kwargs": code(f"{MADRY}: epsilon 8/255, 7 steps of 2/255, random start"),
           "adv_training.optimizer": code(f"{MADRY} and train.py: SGD with momentum"),
           "adv_training.momentum": code(f"{MADRY}: momentum 0.9"),
           "adv_training.lr": code(f"{MADRY}: step_size_schedule starts at 0.1"),
           "adv_training.weight_decay": code(f"{MADRY}: weight_decay 0.0002"),
           "adv_training.batch_size": code(f"{MADRY}: training_batch_size 128"),
           "adv_training.iterations": code(f"{MADRY}: max_num_training_steps 80,000"),
           "adv_training.milestones": code(f"{MADRY}: step_size_schedule 0.1 -> 0.01 at 40,000 -> 0.001 at 60,000"),
           "adv_training.gamma": code(f"{MADRY}: each drop divides the rate by 10"),
           "adv_training.schedule": code(f"{MADRY}: piecewise-constant step_size_schedule"),
           "adv_training.schedule_unit": code(f"{MADRY}: the schedule counts steps"),
           "mmc.model": in_paper(f"{SMALL_NET}, with the MMC head (Pang et al. 2020, ref. [27])"),
           "mmc.model_kwargs": assumption("MMC centers in a 256-dim feature space (the authors' ResNet-32 v2 "
                                          "feature dimension); the paper's C_MM = 10 is the head's default"),
           "mmc.objective": assumption("MMC's loss (Pang et al. 2020) without adversarial training, as "
                                       "penalty-mnist: Table 5 names MMC, not MMC + AT"),
           "mmc.optimizer": code(f"{MMC_CODE} train.py: Adam"),
           "mmc.lr": code(f"{MMC_CODE} README: lr 0.001"),
           "mmc.batch_size": code(f"{MMC_CODE} README: batch_size 50"),
           "mmc.epochs": code(f"{MMC_CODE} train.py: 180 epochs on CIFAR-10"),
           "mmc.milestones": code(f"{MMC_CODE} train.py lr_schedule: x0.1 after epoch 80, x0.01 after 120 "
                                  "(Keras counts epochs from 0)"),
           "mmc.gamma": code(f"{MMC_CODE} train.py lr_schedule: factors 0.1 and 0.01"),
           "mmc.schedule": code(f"{MMC_CODE} train.py: a step schedule per epoch"),
           "mmc.schedule_unit": code(f"{MMC_CODE} train.py: LearningRateScheduler, per epoch"),
           "mmc.weight_decay": assumption("the authors' train.py adds no weight decay to Adam: none")}
    return src


def activation_sources(profile: str) -> dict[str, Source]:
    """Figure 7: Table 5's penalty recipe (Section 4.3 gives none) with each activation."""
    src = penalty_sources()
    src["model_kwargs"] = in_paper("Section 4.3, Figure 7: ReLU, PReLU, LeakyReLU and Tanh features, "
                                   "alpha = 100 and s = 0.1")
    for k in ("optimizer", "lr", "epochs"):
        src[k] = assumption(f"Section 4.3 gives no training recipe for Figure 7: Table 5's ({src[k].where})")
    return src


# ---------------------------------------------------------------------------
# the curves


def curves_of(history: list[dict[str, Any]], every: int) -> dict[str, list[tuple[float, float]]]:
    """``{"train_robust": [(epoch, percent), ...], ...}`` from a history with the monitor's
    training curves (``every`` steps = one epoch)."""
    return {k: [(h["step"] / every, 100.0 * h[f"monitor_{k}"]) for h in history if f"monitor_{k}" in h]
            for k in CURVES}


def curve_rows(ctx: Context, label: str, defense: str, curves: dict[str, list[tuple[float, float]]],
               cfg: TrainConfig) -> list:
    """Result rows of the curves of a run trained as ``cfg`` (metric ``curve_<set>``, the
    epoch in the row's extra, its monitor's points as n)."""
    n = {"train": cfg.monitor.train_points, "test": cfg.monitor.test_points}
    return [ctx.row(model=label, defense=defense, metric=f"curve_{k}", value=v, dataset="cifar10",
                    attack="none" if k.endswith("clean") else PGD20, eps=0.0 if k.endswith("clean") else EPS,
                    n=n[k.partition("_")[0]], epoch=round(e, 3)) for k, pts in curves.items() for e, v in pts]


def curve_comparisons(label: str, curves: dict[str, list[tuple[float, float]]], n: int) -> list[Comparison]:
    """Peak and last test PGD-20 accuracy (Figure 4's over-fitting reads as their gap)."""
    test = curves["test_robust"]
    if not test:
        return []
    best = max(test, key=lambda p: p[1])
    return [Comparison(f"{label}: [curve] test PGD-20, best epoch ({best[0]:.0f})", best[1], None, n=n),
            Comparison(f"{label}: [curve] test PGD-20, last epoch ({test[-1][0]:.0f})", test[-1][1], None, n=n,
                       note=f"{test[-1][1] - best[1]:+.1f} from the best"),
            Comparison(f"{label}: [curve] training PGD-20, last epoch", curves["train_robust"][-1][1], None, n=n)]


def plot_curves_panels(panels: dict[str, dict[str, list[tuple[float, float]]]], path: Any, title: str) -> Any:
    """One panel per model: training (blue) and test (orange) accuracy per epoch, under
    PGD-20 (solid) and clean (dashed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * max(len(panels), 1), 3.8))
    for i, (name, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key, color, style, text in (("train_robust", "C0", "-", "training, PGD-20"),
                                        ("test_robust", "C1", "-", "test, PGD-20"),
                                        ("train_clean", "C0", "--", "training, clean"),
                                        ("test_clean", "C1", "--", "test, clean")):
            pts = curves[key]
            ax.plot([e for e, _ in pts], [v for _, v in pts], color=color, linestyle=style, label=text,
                    marker="o" if len(pts) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------
# the experiments


def audit_specs() -> list[AttackSpec]:
    """penalty-cifar's linf audit and APGD-CE/-DLR through a straight-through tanh."""
    return PC.cifar_specs()[1] + PM.adaptive_specs()


@experiment("penalty-cifar-small", title="AdvTraining, MMC and the weight penalty on the small CIFAR-10 network "
            "(Table 5, Figure 4) and their audit", paper="weight-penalization-classification-layer.txt",
            reference="weight_penalty.cifar10_small", models=table5_configs, profiles=("paper",),
            sources=table5_sources,
            expected={"paper": "about 70 minutes on one A100-class GPU, 20 on an H100 (--plan: 1.9e17 FLOP, "
                               "training 5.0e16, evaluation 1.4e17); the small network fills a GPU poorly"})
def penalty_cifar_small(ctx: Context) -> Outcome:
    """Table 5's three rows under its attacks and the strong evaluation; Figure 4's
    per-epoch training and test accuracy (clean and PGD-20) from the same runs."""
    PC.record_cifar_attacks(ctx, "cifar10")
    ctx.setting("training augmentation", "none", assumption("Section 4.2 names none (Section 4.1's crop and flip "
                "are stated for WRN-34-10); the same data for the three methods"), scope="training")
    test = load("cifar10", "test")
    ref = ctx.reference("weight_penalty.cifar10_small")
    pub = {row: dict(zip(ref["columns"], vals)) for row, vals in ref["rows"].items()}
    paper, _, l2specs = PC.cifar_specs()
    audit = audit_specs()
    n = ctx.size(N, SMOKE_POINTS)
    comps: list[Comparison] = []
    notes: list[str] = []
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for row, cfg in table5_configs(ctx.profile).items():
        trained = ctx.fit(cfg)
        model = trained.model.eval()
        common = dict(n=n, model_name=cfg.model, defense=row, dataset="cifar10")
        res = ctx.evaluate(model, test, paper + audit, [EPS], **common)
        l2 = ctx.evaluate(model, test, l2specs, [CW_EPS], norm="l2", **common)
        p = pub[row]
        comps.append(Comparison(f"{row}: clean", res.percent("none"), p["clean"], n=res.n))
        comps += [Comparison(f"{row}: {name}", res.percent(spec.label, EPS), p[key], n=res.n)
                  for spec, name, key in zip(paper, ("PGD-20", "PGD-100", "DeepFool (linf)", "MTA-100"),
                                             ("pgd20", "pgd100", "deepfool", "mta100"))]
        comps.append(Comparison(f"{row}: C&W L2 within radius 1", l2.percent(l2specs[0].label, CW_EPS), p["cw"],
                                n=l2.n))
        comps += [Comparison(f"{row}: [audit] {PM.display(s)}", res.percent(s.label, EPS), None, n=res.n)
                  for s in audit]
        comps += [Comparison(f"{row}: [audit] worst of the paper's linf attacks",
                             PM.worst_of(res, [s.label for s in paper], EPS),
                             min(p[k] for k in ("pgd20", "pgd100", "deepfool", "mta100")), n=res.n),
                  Comparison(f"{row}: [audit] worst case, all linf attacks", res.percent(WORST, EPS), p["pgd20"],
                             note="paper: PGD-20; the fall is the gap", n=res.n),
                  Comparison(f"{row}: [audit] l2 worst case at radius 1", l2.percent(WORST, CW_EPS), p["cw"],
                             note="paper: C&W", n=l2.n)]
        geo = PM.model_geometry(model, test.images[:n].to(ctx.device), PM.PENALTY["s"] if row == "penalty" else None)
        comps += PM.geometry_comparisons(row, geo)
        panels[row] = curves_of(trained.history, trained.config.monitor.every)
        comps += curve_comparisons(row, panels[row], trained.config.monitor.test_points)
        ctx.record(curve_rows(ctx, cfg.model, row, panels[row], trained.config))
        notes += PM.check_notes(row, [res, l2])
    names = {"adv_training": "AdvTraining", "mmc": "MMC", "penalty": "penalty (ours)"}
    figs = [plot_curves_panels({names[k]: v for k, v in panels.items()}, ctx.figure_path("fig4_training_curves"),
                               "CIFAR-10 small network: accuracy per epoch (Figure 4)")]
    notes.append(f"Figure 4's curves: PGD-20 of step 0.0031 at 8/255 once an epoch on the first {CURVE_POINTS:,} "
                 f"training and {CURVE_POINTS:,} test points (the training loop's monitor); the paper reads "
                 "AdvTraining's falling test curve as over-fitting. AdvTraining: Madry et al.'s CIFAR-10 recipe; "
                 "MMC: Pang et al.'s loss and code recipe without adversarial training; the penalty: Adam 0.01, "
                 "400 epochs, tanh features, Frobenius norm; no augmentation; batch 128 assumed for the penalty. "
                 "Published numbers: reference_results.toml [weight_penalty.cifar10_small].")
    return Outcome(comps, figs, notes)


@experiment("penalty-cifar-activations", title="Weight penalty on the small CIFAR-10 network: feature "
            "activations (Figure 7)", paper="weight-penalization-classification-layer.txt",
            reference="weight_penalty.settings", models=activation_configs, profiles=("paper",),
            sources=activation_sources,
            expected={"paper": "about 30 minutes on one A100-class GPU, 10 on an H100 (--plan: 9.0e16 FLOP, "
                               "training 5.0e16, evaluation 4.1e16); the small network fills a GPU poorly"})
def penalty_cifar_activations(ctx: Context) -> Outcome:
    """Training and test accuracy per epoch (clean and PGD-20) of the penalty with ReLU,
    PReLU, LeakyReLU and Tanh features (alpha 100, s 0.1), and each final model's PGD-20
    and worst-case accuracy on the test set."""
    ctx.setting("eps (linf)", EPS, in_paper("Section 4: eps = 8/255 for CIFAR-10"))
    ctx.setting("test points", N, in_paper("the 10,000 CIFAR-10 test images"))
    ctx.setting("paper attack", "PGD-20 of step 0.0031", in_paper("Section 4.3: PGD20 on CIFAR-10; Table 1: "
                                                                  "step 0.0031"))
    ctx.setting("audit attacks", "APGD-CE, APGD-T (9 targets), PGD-100 margin loss, Square (5000 queries), "
                "APGD-CE/-DLR through a straight-through tanh", assumption(
                    "advgeom's strong evaluation (docs/design.md): saturated tanh features weaken cross-entropy "
                    "gradients"))
    test = load("cifar10", "test")
    specs = [AttackSpec("pgd", {"steps": 20, "step_size": 0.0031})] + audit_specs()
    n = ctx.size(N, SMOKE_POINTS)
    comps: list[Comparison] = []
    notes: list[str] = []
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for act, cfg in activation_configs(ctx.profile).items():
        trained = ctx.fit(cfg)
        model = trained.model.eval()
        res = ctx.evaluate(model, test, specs, [EPS], n=n, model_name=f"{cfg.model}/{act}",
                           defense="weight_penalty", dataset="cifar10")
        comps += [Comparison(f"{act}: clean", res.percent("none"), None, n=res.n),
                  Comparison(f"{act}: PGD-20", res.percent(specs[0].label, EPS), None, n=res.n),
                  Comparison(f"{act}: [audit] worst case", res.percent(WORST, EPS), None, n=res.n)]
        panels[act] = curves_of(trained.history, trained.config.monitor.every)
        comps += curve_comparisons(act, panels[act], trained.config.monitor.test_points)
        ctx.record(curve_rows(ctx, f"{cfg.model}/{act}", "weight_penalty", panels[act], trained.config))
        notes += PM.check_notes(act, [res])
    figs = [plot_curves_panels(panels, ctx.figure_path("fig7_activation_curves"),
                               "CIFAR-10 small network, alpha 100, s 0.1: accuracy per epoch (Figure 7)")]
    notes.append("Figure 7 is read as per-epoch curves like Figure 4 (the text says 'training and test accuracy'); "
                 f"they come from the training loop's monitor: PGD-20 on the first {CURVE_POINTS:,} training and "
                 f"{CURVE_POINTS:,} test points once an epoch. The paper's reading: clean accuracy about equal "
                 "across activations, Tanh the most robust. Training: Table 5's penalty recipe (Adam 0.01, "
                 "400 epochs, batch 128 assumed); the Tanh model is Table 5's penalty model.")
    return Outcome(comps, figs, notes)
