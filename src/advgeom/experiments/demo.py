"""The main job on the embedded default: the baseline MNIST CNN of
hyperspherical-defense.txt (Appendix C Table 4), naturally trained, attacked with
FGSM (eps 0.3) and PGD (eps 0.3, step 0.01, 100 iterations) as in Table 1."""
from __future__ import annotations

from advgeom.data import load
from advgeom.eval.report import format_checks
from advgeom.experiments.base import Comparison, Context, Outcome, experiment
from advgeom.experiments.settings import Source, assumption, paper
from advgeom.results.plots import plot_accuracy_vs_eps
from advgeom.train import TrainConfig

PAPER_EPS = 0.3
CURVE_EPS = (0.1, 0.2, 0.3)
ATTACKS = ("fgsm", "pgd:steps=100,step_size=0.01")


def demo_config(profile: str) -> tuple[TrainConfig, int]:
    """Training config and number of test points for a profile.

    paper: Adam lr 1e-3, divided by 10 every 10k iterations, 30k iterations (Section 5);
    the batch size is not stated in the paper: 128 is our assumption.
    quick: 600 iterations of the same recipe, 300 test points.
    """
    if profile == "paper":
        cfg = TrainConfig(dataset="mnist", model="hyper_mnist_cnn", objective="ce", optimizer="adam",
                          lr=1e-3, batch_size=128, iterations=30_000, milestones=(10_000, 20_000),
                          checkpoint_every=1000)
        return cfg, 10_000
    cfg = TrainConfig(dataset="mnist", model="hyper_mnist_cnn", objective="ce", optimizer="adam",
                      lr=1e-3, batch_size=128, iterations=600, checkpoint_every=100)
    return cfg, 300


def demo_sources(profile: str) -> dict[str, Source]:
    """Where each training setting of :func:`demo_config` comes from (hyperspherical-defense.txt)."""
    sched = paper("hyperspherical-defense.txt Section 7.1: lr / 10 every 10K iterations, stop at 30K")
    src = {"dataset": paper("hyperspherical-defense.txt Section 7: MNIST"),
           "model": paper("hyperspherical-defense.txt Appendix C, Table 4: the CNN for MNIST"),
           "objective": paper("Table 1's natural-training column: cross-entropy"),
           "optimizer": paper("Section 7.1: ADAM"), "lr": paper("Section 7.1: initial learning rate 0.001"),
           "weight_decay": assumption("the paper names no weight decay for the baseline CNN: none"),
           "batch_size": assumption("the paper gives no batch size: 128"),
           "iterations": sched, "milestones": sched, "gamma": paper("Section 7.1: lr / 10"),
           "schedule_unit": sched, "schedule": sched,
           "train_size": paper("all 60,000 MNIST training images (Section 7.1 holds none out)"),
           "precision": assumption("fp32, the frameworks' default; the paper states none")}
    if profile == "quick":
        why = assumption("quick profile: 600 iterations of the same recipe at a constant rate, minutes on 2 CPU cores")
        src.update(iterations=why, schedule=why)
    return src


@experiment("demo", title="Baseline MNIST CNN, natural training, FGSM and PGD at eps 0.3",
            paper="hyperspherical-defense.txt", reference="hyperspherical.mnist_whitebox",
            models=lambda profile: {"hyper_mnist_cnn/natural": demo_config(profile)[0]}, sources=demo_sources)
def demo(ctx: Context) -> Outcome:
    """Table 1 of hyperspherical-defense.txt, baseline rows, natural-training column."""
    cfg, n = demo_config(ctx.profile)
    model = ctx.train(cfg)
    test = load("mnist", "test")
    n = ctx.setting("test points", n, paper("the 10,000 MNIST test images") if n == 10_000
                    else assumption(f"the first {n} test images: quick profile, minutes on 2 CPU cores"))
    attacks = ctx.setting("attacks", list(ATTACKS), paper("Section 7.2: FGSM at eps 0.3; PGD of step 0.01, "
                                                          "100 iterations"))
    eps = ctx.setting("eps (linf)", CURVE_EPS if ctx.quick else (0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
                      assumption(f"a curve up to Table 1's eps {PAPER_EPS} (Section 7.2), which it compares"))
    res = ctx.evaluate(model, test, attacks, list(eps), n=n, model_name=cfg.model,
                       defense="natural", dataset="mnist")

    def value(attack: str, e: float) -> float:
        for r in res.rows:
            if r.metric == "robust_accuracy" and r.attack == attack and abs(r.eps - e) < 1e-9:
                return r.value
        raise KeyError((attack, e))

    clean = next(r.value for r in res.rows if r.metric == "clean_accuracy")
    ref = ctx.reference("hyperspherical.mnist_whitebox")["rows"]
    col = 0  # natural_train column
    pgd_label = next(s.label for s in res.specs if s.name == "pgd")
    comps = [
        Comparison("clean accuracy", clean, ref["baseline/natural"][col], n=res.n),
        Comparison("FGSM eps=0.3", value("fgsm", PAPER_EPS), ref["baseline/fgsm"][col], n=res.n),
        Comparison("PGD-100 eps=0.3 step 0.01", value(pgd_label, PAPER_EPS), ref["baseline/pgd"][col],
                   n=res.n),
        Comparison("worst case over both, eps=0.3", value("worst_case", PAPER_EPS), None, n=res.n),
    ]
    fig = plot_accuracy_vs_eps(res.rows, ctx.figure_path("accuracy_vs_eps"),
                               title="hyper_mnist_cnn (natural training) on MNIST")
    notes = [f"{res.n} MNIST test points; training: {cfg.iterations} Adam iterations, batch {cfg.batch_size}."]
    notes += [line.strip() for line in format_checks(res.checks).splitlines() if line.strip()]
    return Outcome(comps, [fig], notes)
