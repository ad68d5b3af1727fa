"""Adversarial training: PGD-AT, fast FGSM-AT, TRADES and MART, each registered as a
``defense`` with its paper's defaults and the loss of its official code.

Every defense takes the training threat model as ``eps`` and ``norm`` (the attacks'
vocabulary), ``warmup`` (a linear eps ramp over that share of training; 0 = the
paper's constant eps), ``craft_mode`` ("eval" by default: examples are crafted with
the model in eval mode, "train" crafts in training mode with BatchNorm statistics
frozen) and ``attack``: the spec of any registered attack that crafts the training
examples (``"pgd:steps=10,step_size=0.01,early_stop=false"``), or ``""`` for the
paper's own crafting procedure (FGSM-AT, TRADES, MART). Defaults follow each paper's
MNIST setting (eps 0.3, 40 steps of 0.01) where it has one.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.attacks._geometry import (ascent_direction, fix_generator, project, rand,
                                       random_start)
from advgeom.defenses.base import (Loss, SpecCrafter, StepContext, ThreatModel, check_count,
                                   check_craft_mode, check_nonneg, check_positive, crafting,
                                   logits_of)
from advgeom.errors import ConfigError
from advgeom.registry import register

Crafter = Callable[..., Tensor]

# ---------------------------------------------------------------------------
# the papers' own crafting procedures


def noise_pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, steps: int,
              step_size: float, generator: torch.Generator, loss: str = "ce") -> Tensor:
    """The inner maximization of TRADES (Zhang et al. 2019, ``loss="kl"``: maximize
    KL(p(x) || p(x'))) and MART (Wang et al. 2020, ``loss="ce"``): start at
    ``x + 0.001 N(0, I)``, take ``steps`` signed (linf) or normalized (l2) gradient
    steps of ``step_size``, project onto the eps-ball and [0,1]; the last iterate.

    The random start is clipped to [0,1] before its first gradient, so the model never
    sees an input outside the box. The official TRADES and MART code takes the first
    gradient at the unclipped start and clips only after each step; the two differ only
    at pixels within 0.001-scale noise of 0 or 1 (the background of MNIST) and only in
    that first gradient."""
    if eps <= 0.0:
        return x.detach()
    eps_t = torch.full((x.shape[0],), float(eps), dtype=x.dtype, device=x.device)
    x_adv = (x + 0.001 * rand(tuple(x.shape), generator, x, normal=True)).clamp_(0.0, 1.0)
    target = None
    if loss == "kl":
        with torch.no_grad():
            target = F.softmax(logits_of(model, x), dim=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        z = logits_of(model, x_adv)
        if target is None:
            value = F.cross_entropy(z, y, reduction="sum")
        else:
            value = F.kl_div(F.log_softmax(z, dim=1), target, reduction="sum")
        (g,) = torch.autograd.grad(value, x_adv)
        x_adv = project(x, x_adv.detach() + step_size * ascent_direction(g, norm), eps_t, norm)
    return x_adv.detach()


FAST_FGSM_STARTS = ("clipped", "unclipped")


def fast_fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str, alpha: float,
              generator: torch.Generator, start: str = "clipped") -> Tensor:
    """FGSM with a random start (Wong et al. 2020): a uniform point of the eps-ball,
    one signed gradient step of ``alpha``, projection onto the ball and [0,1]. ``start``:
    the gradient is taken at the start clipped to [0,1] (``"clipped"``, as their CIFAR-10
    code) or at the unclipped one, pixels outside [0,1] included (``"unclipped"``, as
    their MNIST code, ``MNIST/train_mnist.py``); the returned example is in [0,1] either way."""
    if eps <= 0.0:
        return x.detach()
    eps_t = torch.full((x.shape[0],), float(eps), dtype=x.dtype, device=x.device)
    x0 = random_start(x, eps_t, norm, generator, clip=start == "clipped").requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(logits_of(model, x0), y, reduction="sum"), x0)
    return project(x, x0.detach() + alpha * ascent_direction(g, norm), eps_t, norm).detach()


class AdversarialSetup:
    """Checked options every adversarial defense shares."""

    def __init__(self, name: str, eps: float, norm: str, warmup: float, craft_mode: str,
                 attack: str) -> None:
        self.name = name
        self.threat = ThreatModel.checked(name, eps, norm, warmup)
        self.mode = check_craft_mode(name, craft_mode)
        self.spec = SpecCrafter.parse(name, attack) if attack else None

    def craft(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None,
              context: StepContext | None, own: Crafter | None = None) -> Tensor:
        """Training examples for this step: the attack spec's, else the paper's own."""
        eps, norm = self.threat.at(context), self.threat.norm
        gen = fix_generator(generator, x.device)
        with crafting(model, self.mode):
            if self.spec is not None or own is None:
                return self.spec(model, x, y, eps=eps, norm=norm, generator=gen)
            return own(model, x, y, eps=eps, norm=norm, generator=gen)


# ---------------------------------------------------------------------------
# defenses


@register("defense", "pgd_at")
def pgd_at(eps: float = 0.3, norm: str = "linf",
           attack: str = "pgd:steps=40,step_size=0.01,early_stop=false", mix: float = 0.0,
           warmup: float = 0.0, craft_mode: str = "eval") -> Callable[..., Loss]:
    """PGD adversarial training (Madry et al. 2018): cross-entropy on PGD examples
    (random start; MNIST: eps 0.3, 40 steps of 0.01). ``mix`` in [0, 1] weighs in the
    clean cross-entropy, ``(1 - mix) CE(x') + mix CE(x)`` (Goodfellow et al. 2015 used
    0.5; Madry et al. 0). advgeom's ``pgd`` returns its highest-loss iterate (a
    misclassified one when any is) where Madry's code keeps the last."""
    s = AdversarialSetup("pgd_at", eps, norm, warmup, craft_mode, attack)
    mix = check_mix("pgd_at", mix)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        x_adv = s.craft(model, inputs, labels, generator, context)
        return mixed_ce(model, x_adv, inputs, labels, mix)

    return objective


def check_mix(name: str, mix: Any) -> float:
    """``mix`` of an adversarial-training objective: a weight in [0, 1]."""
    mix = check_nonneg(name, "mix", mix)
    if mix > 1.0:
        raise ConfigError(f"defense {name!r}: mix must be in [0, 1], got {mix}")
    return mix


def mixed_ce(model: nn.Module, x_adv: Tensor, inputs: Tensor, labels: Tensor, mix: float) -> Loss:
    """``(1 - mix) CE(x_adv) + mix CE(x)``; with ``mix`` 0 one forward, on ``x_adv`` alone."""
    adv = F.cross_entropy(logits_of(model, x_adv), labels)
    if mix == 0.0:
        return Loss(adv, {"adv_ce": adv.detach()})
    clean = F.cross_entropy(logits_of(model, inputs), labels)
    return Loss((1 - mix) * adv + mix * clean, {"adv_ce": adv.detach(), "clean_ce": clean.detach()})


@register("defense", "fgsm_at")
def fgsm_at(eps: float = 0.3, norm: str = "linf", alpha: float | None = None, attack: str = "",
            warmup: float = 0.0, craft_mode: str = "eval", start: str = "clipped",
            mix: float = 0.0) -> Callable[..., Loss]:
    """Fast adversarial training (Wong et al. 2020, "Fast is better than free"):
    cross-entropy on FGSM examples from a uniform random start, step ``alpha`` (default
    1.25 eps, scaled with the eps ramp); ``start`` as :func:`fast_fgsm` (``"unclipped"``:
    their MNIST code); ``mix`` weighs in the clean cross-entropy as in :func:`pgd_at`
    (0.5 with ``attack="fgsm"``: Goodfellow et al.'s FGSM training, CleverHans's
    adversarial training). It is prone to catastrophic overfitting (PGD accuracy
    collapsing within a few steps, Wong et al. Section 5): train it with the
    robust-accuracy monitor (``monitor_every`` in the training config)."""
    mix = check_mix("fgsm_at", mix)
    if start not in FAST_FGSM_STARTS:
        raise ConfigError(f"fgsm_at: start must be one of {', '.join(FAST_FGSM_STARTS)}, got {start!r}")
    s = AdversarialSetup("fgsm_at", eps, norm, warmup, craft_mode, attack)
    ratio = 1.25 if alpha is None else (check_positive("fgsm_at", "alpha", alpha, "0 would train on "
                                                      "random noise") / max(s.threat.eps, 1e-12))

    def own(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str,
            generator: torch.Generator) -> Tensor:
        return fast_fgsm(model, x, y, eps=eps, norm=norm, alpha=ratio * eps, generator=generator, start=start)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        x_adv = s.craft(model, inputs, labels, generator, context, own)
        return mixed_ce(model, x_adv, inputs, labels, mix)

    return objective


def _own_pgd(name: str, steps: int, step_size: float, loss: str) -> Crafter:
    steps = check_count(name, "steps", steps)
    step_size = check_positive(name, "step_size", step_size, "0 would train on the noisy start")

    def own(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str,
            generator: torch.Generator) -> Tensor:
        return noise_pgd(model, x, y, eps=eps, norm=norm, steps=steps, step_size=step_size,
                         generator=generator, loss=loss)

    return own


def _clean_and_adversarial(name: str, loss: Callable[..., Loss], inner: str, eps: float, norm: str,
                           beta: float, steps: int, step_size: float, attack: str, warmup: float,
                           craft_mode: str) -> Callable[..., Loss]:
    """An objective ``loss(f(x), f(x'), y, beta)`` on the clean batch and examples crafted
    by ``attack`` or by :func:`noise_pgd` on ``inner`` (TRADES and MART: two training
    forwards, as in their official code)."""
    s = AdversarialSetup(name, eps, norm, warmup, craft_mode, attack)
    beta = (check_positive(name, "beta", beta, "0 leaves the clean cross-entropy alone: natural "
                           "training") if name == "trades" else check_nonneg(name, "beta", beta))
    own = _own_pgd(name, steps, step_size, inner)

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        x_adv = s.craft(model, inputs, labels, generator, context, own)
        return loss(logits_of(model, inputs), logits_of(model, x_adv), labels, beta)

    return objective


def trades_loss(logits: Tensor, logits_adv: Tensor, labels: Tensor, beta: float) -> Loss:
    """TRADES (Zhang et al. 2019, eq. 5 as in the official code): ``CE(f(x), y) +
    beta * (1/B) sum_i KL(p(x_i) || p(x'_i))``; gradients flow through both terms."""
    ce = F.cross_entropy(logits, labels)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                  reduction="sum") / logits.shape[0]
    return Loss(ce + beta * kl, {"ce": ce.detach(), "kl": kl.detach()})


@register("defense", "trades")
def trades(eps: float = 0.3, norm: str = "linf", beta: float = 6.0, steps: int = 40,
           step_size: float = 0.01, attack: str = "", warmup: float = 0.0,
           craft_mode: str = "eval") -> Callable[..., Loss]:
    """TRADES (Zhang et al. 2019): clean cross-entropy plus ``beta`` times the KL
    divergence between clean and adversarial predictions, the adversarial example
    maximizing that KL from ``x + 0.001 N(0, I)`` (``steps`` x ``step_size``; MNIST
    script: 40 x 0.01 at eps 0.3 with beta 1; the paper's default beta is 6)."""
    return _clean_and_adversarial("trades", trades_loss, "kl", eps, norm, beta, steps, step_size,
                                  attack, warmup, craft_mode)


def mart_loss(logits: Tensor, logits_adv: Tensor, labels: Tensor, beta: float) -> Loss:
    """MART (Wang et al. 2020, eq. 9 as in the official code): the boosted cross-entropy
    ``-log p'_y - log(1.0001 - max_{k != y} p'_k + 1e-12)`` on the adversarial example
    plus ``beta * mean_i KL(p(x_i) || p(x'_i)) (1.0000001 - p_y(x_i))``."""
    p_adv = F.softmax(logits_adv, dim=1)
    top2 = p_adv.topk(2, dim=1).indices
    other = torch.where(top2[:, 0] == labels, top2[:, 1], top2[:, 0])
    bce = F.cross_entropy(logits_adv, labels) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), other)
    p_nat = F.softmax(logits, dim=1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_nat, reduction="none").sum(1)
    p_true = p_nat.gather(1, labels.unsqueeze(1)).squeeze(1)
    robust = (kl * (1.0000001 - p_true)).mean()
    return Loss(bce + beta * robust, {"bce": bce.detach(), "kl": robust.detach()})


@register("defense", "mart")
def mart(eps: float = 0.3, norm: str = "linf", beta: float = 6.0, steps: int = 40,
         step_size: float = 0.01, attack: str = "", warmup: float = 0.0,
         craft_mode: str = "eval") -> Callable[..., Loss]:
    """MART (Wang et al. 2020, "Improving adversarial robustness requires revisiting
    misclassified examples"): boosted cross-entropy on PGD examples (cross-entropy
    ascent from ``x + 0.001 N(0, I)``) plus ``beta`` (6) times the KL term weighted by
    the clean misclassification ``1 - p_y(x)``. The official code is CIFAR-only
    (eps 8/255, 10 x 0.007); 40 x 0.01 at eps 0.3 is advgeom's MNIST default."""
    return _clean_and_adversarial("mart", mart_loss, "ce", eps, norm, beta, steps, step_size,
                                  attack, warmup, craft_mode)

