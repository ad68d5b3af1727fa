"""Known RobustBench model-zoo entries (Croce et al. 2021) that advgeom's zoo loader
builds: the architecture each entry's file holds and the input normalization
RobustBench's model class applies before it (``(x - mean) / std``; ``None``: the
network reads [0,1] inputs as they are).

Every value is read from RobustBench's ``robustbench/model_zoo/cifar10.py``
(github.com/RobustBench/robustbench, the entry dicts ``linf``, ``l2`` and
``common_corruptions`` and the model classes they name); the comment on each entry
names its class. Several of these files do not store the ``mu``/``sigma`` buffers
(RobustBench loads them non-strictly, ``_safe_load_state_dict`` in ``utils.py``,
keeping the class's values): this table is where advgeom finds them.

Keys are RobustBench's entry names for CIFAR-10 Linf; other threat models are
prefixed (``"L2/Rice2020Overfitting"``, ``"corruptions/Hendrycks2020AugMix_WRN"``).
"""
from __future__ import annotations

from dataclasses import dataclass

from advgeom.errors import ConfigError
from advgeom.registry import did_you_mean


@dataclass(frozen=True)
class ZooEntry:
    """One zoo entry: the architecture its file holds (as :mod:`advgeom.models.zoo`
    names it) and its normalization."""

    arch: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


# the CIFAR-10 statistics written in several RobustBench model classes
_C10 = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))   # (x - 0.5) / 0.5 = 2x - 1
_PREACT_PLAIN = "PreAct ResNet-18 without final BN"   # PreActBlock, bn_before_fc=False
_PREACT_BN = "PreAct ResNet-18"   # PreActBlockV2 (shortcut of the activated input), bn_before_fc=True

ZOO_ENTRIES: dict[str, ZooEntry] = {
    # --- linf
    "Andriushchenko2020Understanding": ZooEntry(_PREACT_PLAIN),   # PreActResNet(PreActBlock, [2,2,2,2])
    "Carmon2019Unlabeled": ZooEntry("WRN-28-10"),                 # WideResNet(28, 10, sub_block1=True)
    "Zhang2019Theoretically": ZooEntry("WRN-34-10"),              # WideResNet(34, 10, sub_block1=True)
    "Hendrycks2019Using": ZooEntry("WRN-28-10", *_HALF),          # Hendrycks2019UsingNet: 2x - 1
    "Rice2020Overfitting": ZooEntry("WRN-34-20", *_C10),          # Rice2020OverfittingNet
    "Wong2020Fast": ZooEntry(_PREACT_PLAIN, *_C10),               # Wong2020FastNet
    "Chen2020Efficient": ZooEntry("WRN-34-10", *_C10),            # Chen2020EfficientNet
    "Standard": ZooEntry("WRN-28-10"),                            # WideResNet(28, 10)
    # --- l2
    "L2/Rice2020Overfitting": ZooEntry(_PREACT_BN, *_C10),        # Rice2020OverfittingNetL2
    "L2/Rony2019Decoupling": ZooEntry(                            # Rony2019DecouplingNet
        "WRN-28-10", (0.491, 0.482, 0.447), (0.247, 0.243, 0.262)),
    **{f"L2/Augustin2020Adversarial_34_10{extra}": ZooEntry(      # Augustin2020AdversarialWideNet
        "WRN-34-10", (0.4913997551666284, 0.48215855929893703, 0.4465309133731618),
        (0.24703225141799082, 0.24348516474564, 0.26158783926049628)) for extra in ("", "_extra")},
    "L2/Standard": ZooEntry("WRN-28-10"),                         # WideResNet(28, 10)
    # --- common corruptions
    "corruptions/Hendrycks2020AugMix_WRN": ZooEntry("WRN-40-2", *_HALF),   # Hendrycks2020AugMixWRNNet
    **{f"corruptions/Kireev2021Effectiveness_{name}": ZooEntry(_PREACT_BN, *_C10)  # Kireev2021EffectivenessNet
       for name in ("Gauss50percent", "AugMixNoJSD", "RLAT", "RLATAugMixNoJSD", "RLATAugMix")},
}


def zoo_entry(name: str) -> ZooEntry:
    """The known entry ``name`` (a leading ``"Linf/"`` is optional); an unknown name is
    one :class:`ConfigError` listing the known ones."""
    key = name.removeprefix("Linf/") if isinstance(name, str) else name
    if key not in ZOO_ENTRIES:
        hint = did_you_mean(str(key), ZOO_ENTRIES)
        raise ConfigError(f"unknown model-zoo entry {name!r}" + (f"; {hint}" if hint else "")
                          + f" (known: {', '.join(ZOO_ENTRIES)})")
    return ZOO_ENTRIES[key]
