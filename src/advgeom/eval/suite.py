"""The standard evaluation: AutoAttack's suite (Croce & Hein 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks") built from
advgeom's own attacks, run as a cascade: each attack only on the points every earlier
one left robust, per-sample worst case (docs/design.md "Evaluating robustness honestly": the
default strong evaluation of every defense).

Versions, as AutoAttack names them:

- ``standard``: APGD-CE (100 iterations), APGD-T (targeted DLR, 9 targets, 100
  iterations), FAB-T (9 targets, 100 iterations), Square (5000 queries; linf only);
- ``plus``: APGD-CE and APGD-DLR with 5 restarts, untargeted FAB (5 restarts),
  Square with 5 restarts, APGD-T (9 targets) and FAB-T (9 targets, 5 restarts), in
  AutoAttack's order;
- ``rand`` (randomized defenses): APGD-CE and APGD-DLR on the EOT average of 20 forward
  passes (Athalye et al. 2018).

:func:`run_evaluation`, the CLI's entry point, runs either this suite or a list of attacks.

Differences from AutoAttack, stated: Square does not spend a query on a candidate that
leaves the image unchanged (:mod:`advgeom.attacks.square`), so it is at least as strong
at equal queries. As in AutoAttack, Square's 5000 queries follow the p schedule of a
10000-query run (not rescaled). Under l2 there is no Square stage (advgeom's Square is linf).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from torch import Tensor, nn

from advgeom.attacks.spec import AttackSpec, cap_spec, parse_attacks
from advgeom.attacks.wrappers import eot
from advgeom.errors import AdvgeomError, ConfigError
from advgeom.eval.runner import EvalResult, evaluate
from advgeom.registry import get
from advgeom.results.plots import plot_accuracy_vs_eps

VERSIONS = ("standard", "plus", "rand")
EOT_SAMPLES = 20


def _eot(name: str, samples: int = EOT_SAMPLES) -> Callable[..., Tensor]:
    """Registered attack ``name`` run on the EOT average of ``samples`` forward passes."""
    fn = get("attack", name)

    def attack(model: nn.Module, inputs: Tensor, labels: Tensor, **kw: Any) -> Tensor:
        return fn(eot(model, samples), inputs, labels, **kw)

    attack.attack_kind = "iterative"  # type: ignore[attr-defined]
    attack.__qualname__ = f"eot{samples}_{name}"
    return attack


def suite_specs(version: str = "standard", norm: str = "linf", num_classes: int | None = None,
                caps: Mapping[str, int] | None = None) -> list[AttackSpec]:
    """The attacks of AutoAttack's ``version`` in their order, as advgeom specs; with
    ``caps`` (``--smoke``) each budget capped by :func:`~advgeom.attacks.spec.cap_spec`."""
    specs = _suite_specs(version, norm, num_classes)
    return specs if caps is None else [cap_spec(s, caps) for s in specs]


def _suite_specs(version: str, norm: str, num_classes: int | None) -> list[AttackSpec]:
    if version not in VERSIONS:
        raise ConfigError(f"unknown suite version {version!r}; choose one of {', '.join(VERSIONS)}")
    if num_classes is not None and num_classes < 4:
        raise ConfigError(f"the {version} suite needs >= 4 classes (APGD-T's targeted DLR loss), "
                          f"the model has {num_classes}; for binary tasks evaluate with "
                          "'apgd-ce,pgd:loss=margin,square'")
    if version == "rand":
        return [AttackSpec("apgd-ce", {"steps": 100}, label="apgd-ce-eot", attack=_eot("apgd-ce")),
                AttackSpec("apgd-dlr", {"steps": 100}, label="apgd-dlr-eot", attack=_eot("apgd-dlr"))]
    r = 5 if version == "plus" else 1
    specs = [AttackSpec("apgd-ce", {"steps": 100, "restarts": r}, label="apgd-ce")]
    if version == "plus":
        specs.append(AttackSpec("apgd-dlr", {"steps": 100, "restarts": r}, label="apgd-dlr"))
        specs.append(AttackSpec("fab", {"steps": 100, "num_targets": 0, "restarts": r}, label="fab"))
        if norm == "linf":
            specs.append(AttackSpec("square", {"steps": 5000, "restarts": r,
                                               "rescale_schedule": False}, label="square"))
    specs += [AttackSpec("apgd-t", {"steps": 100, "num_targets": 9}, label="apgd-t"),
              AttackSpec("fab", {"steps": 100, "num_targets": 9, "restarts": r}, label="fab-t")]
    if version == "standard" and norm == "linf":
        specs.append(AttackSpec("square", {"steps": 5000, "rescale_schedule": False}, label="square"))
    if norm != "linf":
        warnings.warn(f"the {version} suite under {norm} has no Square stage (advgeom's Square "
                      "is linf only)", UserWarning, stacklevel=2)
    return specs


def standard_suite(model: nn.Module, data: Any, eps: Any, *, version: str = "standard",
                   norm: str = "linf", caps: Mapping[str, int] | None = None, **kwargs: Any) -> EvalResult:
    """Evaluate ``model`` with AutoAttack's ``version`` suite at every eps (a cascade,
    per-sample worst case); ``caps``: every attack budget capped (``--smoke``); other
    keyword arguments go to :func:`evaluate`."""
    k = (getattr(data, "num_classes", None) or getattr(getattr(data, "dataset", None), "num_classes", None)
         or getattr(model, "num_classes", None))
    return evaluate(model, data, suite_specs(version, norm, k, caps), eps, norm=norm, cascade=True,
                    **kwargs)


# ---------------------------------------------------------------------------
# the CLI entry point


def run_evaluation(model: nn.Module, data: Any, attack_specs: str | Sequence[str | AttackSpec] | None,
                   eps_list: str | Sequence[float], *, plot_dir: str | None = None,
                   suite: str | None = None, caps: Mapping[str, int] | None = None,
                   **kwargs: Any) -> EvalResult:
    """The CLI entry point: :func:`evaluate` with spec/eps strings accepted
    (``"pgd:steps=50,apgd-dlr,square"``, ``"0.1,0.2"`` or ``"2/255,8/255"``), or with
    ``suite`` ("standard", "plus", "rand") AutoAttack's suite as a cascade; with
    ``plot_dir``, an accuracy-vs-eps plot written there (paths in ``result.figures``);
    ``caps`` (``--smoke``): every attack budget capped by :func:`~advgeom.attacks.spec.cap_spec`."""
    if suite is not None:
        if attack_specs:
            raise AdvgeomError("give either attacks or a suite, not both")
        result = standard_suite(model, data, eps_list, version=suite, caps=caps, **kwargs)
    else:
        if caps is not None:
            attack_specs = [cap_spec(s, caps) for s in parse_attacks(attack_specs)]
        result = evaluate(model, data, attack_specs, eps_list, **kwargs)
    if plot_dir is not None:
        name = kwargs.get("model_name") or type(model).__name__
        path = Path(plot_dir) / f"accuracy_vs_eps_{name}_{result.norm}.png"
        result.figures.append(str(plot_accuracy_vs_eps(result.rows, path)))
    return result
