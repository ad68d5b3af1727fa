"""Models from where users keep them: a RobustBench model-zoo checkpoint (Croce et al.
2021, "RobustBench: a standardized adversarial robustness benchmark") of a WideResNet
or a PreAct ResNet, mapped onto advgeom's own :func:`~advgeom.models.resnet.wrn` or
:func:`~advgeom.models.preact.preact_resnet`, and the MNIST models Wong et al. (2020)
released with "Fast is better than free" (``MNIST/models/*.pth`` of their code), mapped
onto :func:`~advgeom.models.fast_at.fast_at_mnist_net`.

The architecture is told by the parameter names and sized by the tensors' shapes:

- RobustBench's ``WideResNet`` (from the TRADES code, Zhang et al. 2019) names its
  parameters ``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``,
  ``bn1`` (the final batch norm) and ``fc``; its blocks compute exactly advgeom's
  pre-activation blocks (the 1x1 shortcut reads the pre-activated input), and its
  ``avg_pool2d(out, 8)`` on 32x32 inputs is advgeom's global average pool. An unused
  ``sub_block1`` (TRADES' WRN-34-10 files) is dropped; a head without bias
  (``bias_last=False``) gets a zero bias.
- RobustBench's ``PreActResNet`` (``model_zoo/architectures/resnet.py``) names them
  ``conv1``, ``layer{1..4}.{i}.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn`` (only with
  ``bn_before_fc``) and ``linear``; its ``avg_pool2d(out, 4)`` is the global pool on
  32x32 inputs. Whether a projection shortcut reads the raw or the pre-activated input
  is not in the shapes: in every RobustBench PreAct entry the networks with a final
  batch norm (``PreActBlockV2`` or ``out_shortcut=True``) read the pre-activated input
  and those without (``PreActBlock``) the raw one, and advgeom follows that rule.
- Wong et al.'s ``mnist_net`` is an ``nn.Sequential`` whose parameters are named by
  position: ``0`` and ``2`` (the 4x4 stride-2 convolutions), ``5`` (FC) and ``7`` (the
  classifier); their code feeds it raw [0,1] pixels, so it gets no normalization.

Normalization goes inside the model (docs/design.md "Contracts"): ``mean``/``std`` given by
the user, else the ``mu``/``sigma`` buffers some zoo classes store in the file, else
the known entry's (:mod:`advgeom.models.zoo_entries`), else none.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
from torch import Tensor, nn

from advgeom.errors import CheckpointError
from advgeom.models.base import Classifier
from advgeom.models.fast_at import fast_at_mnist_net
from advgeom.models.preact import PREACT_BLOCKS, preact_resnet
from advgeom.models.resnet import wrn
from advgeom.models.zoo_entries import zoo_entry

# RobustBench name -> advgeom name, per family; None drops the tensor
_RULES: dict[str, list[tuple[re.Pattern[str], str | None]]] = {
    "WideResNet": [(re.compile(p), r) for p, r in (
        (r"(mu|sigma)", None), (r"sub_block1\..+", None),
        (r"block([123])\.layer\.(\d+)\.(bn1|conv1|bn2|conv2)\.(\w+)", r"body.stage\1.\2.\3.\4"),
        (r"block([123])\.layer\.(\d+)\.convShortcut\.(\w+)", r"body.stage\1.\2.shortcut.\3"),
        (r"conv1\.(\w+)", r"body.conv1.\1"), (r"bn1\.(\w+)", r"body.bn.\1"), (r"fc\.(\w+)", r"head.\1"))],
    "PreAct ResNet": [(re.compile(p), r) for p, r in (
        (r"(mu|sigma)", None),
        (r"layer([1-4])\.(\d+)\.(bn1|conv1|bn2|conv2)\.(\w+)", r"body.stage\1.\2.\3.\4"),
        (r"layer([1-4])\.(\d+)\.shortcut\.0\.(\w+)", r"body.stage\1.\2.shortcut.\3"),
        (r"conv1\.(\w+)", r"body.conv1.\1"), (r"bn\.(\w+)", r"body.bn.\1"), (r"linear\.(\w+)", r"head.\1"))],
    "fast-AT MNIST net": [(re.compile(p), r) for p, r in (
        (r"0\.(weight|bias)", r"body.conv1.\1"), (r"2\.(weight|bias)", r"body.conv2.\1"),
        (r"5\.(weight|bias)", r"body.fc1.\1"), (r"7\.(weight|bias)", r"head.\1"))],
}
# the parameter names of Wong et al.'s positional nn.Sequential MNIST network
_FAST_AT_KEYS = {f"{i}.{p}" for i in (0, 2, 5, 7) for p in ("weight", "bias")}
_WRAPPERS = ("state_dict", "model_state_dict", "model", "last")   # "last": Kireev/Andriushchenko files
_PREFIXES = ("module.", "model.")   # DataParallel; Chen2020Efficient's wrapper


def state_dict_of(obj: Any, where: str = "the file") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint: the object itself or its
    ``state_dict``/``model_state_dict``/``model``/``last`` entry, with DataParallel's
    ``module.`` and a wrapper's ``model.`` prefixes removed."""
    for key in _WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{where} holds no state dict of tensors")
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            k = k.removeprefix(p)
        out[k] = v
    return out


def zoo_family(state: Mapping[str, Tensor], where: str = "the file") -> str:
    """``"WideResNet"``, ``"PreAct ResNet"`` or ``"fast-AT MNIST net"``: which architecture
    a state dict holds, from its parameter names; one :class:`CheckpointError` when none."""
    if set(state) == _FAST_AT_KEYS and state["0.weight"].dim() == 4 and state["5.weight"].dim() == 2:
        return "fast-AT MNIST net"
    if "fc.weight" in state and any(k.startswith("block1.layer.") for k in state):
        return "WideResNet"
    if "linear.weight" in state and any(k.startswith("layer1.") for k in state):
        return "PreAct ResNet"
    shown = ", ".join(list(state)[:3])
    raise CheckpointError(f"{where} is not a RobustBench WideResNet state dict (conv1, block1-3, bn1, fc), "
                          f"a PreAct ResNet one (conv1, layer1-4, linear) nor Wong et al.'s MNIST net "
                          f"(0, 2, 5, 7); it holds {shown}, ...")


def advgeom_names(state: Mapping[str, Tensor], family: str, where: str = "the file") -> dict[str, Tensor]:
    """A RobustBench ``family`` state dict under advgeom's parameter names (the
    normalization buffers and an unused ``sub_block1`` left out)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for name, t in state.items():
        rule = next(((pat, new) for pat, new in _RULES[family] if pat.fullmatch(name)), None)
        if rule is None:
            unknown.append(name)
        elif rule[1] is not None:
            out[rule[0].sub(rule[1], name)] = t
    if unknown:
        raise CheckpointError(f"{where}: {', '.join(unknown[:3])} do not belong to a RobustBench {family} "
                              f"(advgeom maps {family}s of basic pre-activation blocks)")
    return out


def _blocks(mapped: Mapping[str, Tensor], stage: int) -> int:
    return len({k.split(".")[2] for k in mapped if k.startswith(f"body.stage{stage}.")})


def _wrn_spec(mapped: Mapping[str, Tensor], where: str) -> tuple[str, Callable[..., Classifier], dict]:
    width = int(mapped["head.weight"].shape[1])
    n = _blocks(mapped, 1)
    if width % 64:
        raise CheckpointError(f"{where}: a head of width {width} is not a WideResNet's (64 x widen factor)")
    return f"WRN-{6 * n + 4}-{width // 64}", wrn, {"depth": 6 * n + 4, "widen_factor": width // 64}


def _preact_spec(mapped: Mapping[str, Tensor], where: str) -> tuple[str, Callable[..., Classifier], dict]:
    blocks = tuple(_blocks(mapped, s) for s in (1, 2, 3, 4))
    depth = next((d for d, b in PREACT_BLOCKS.items() if b == blocks), None)
    if depth is None:
        known = "; ".join(f"{d}: {b}" for d, b in PREACT_BLOCKS.items())
        raise CheckpointError(f"{where}: a PreAct ResNet with {blocks} blocks per stage; "
                              f"advgeom builds depths {known}")
    base = int(mapped["body.conv1.weight"].shape[0])
    final_bn = "body.bn.weight" in mapped
    label = (f"PreAct ResNet-{depth}" + ("" if base == 64 else f" (base width {base})")
             + ("" if final_bn else " without final BN"))
    return label, preact_resnet, {"depth": depth, "base_width": base, "final_bn": final_bn,
                                  "shortcut": "activated" if final_bn else "input"}


def _fast_at_model(mapped: dict[str, Tensor], where: str) -> Classifier:
    """Wong et al.'s MNIST network sized by the file (channels of both convolutions, FC
    width, classes), holding its weights."""
    conv1, conv2, fc1 = (mapped[f"body.{k}.weight"] for k in ("conv1", "conv2", "fc1"))
    if fc1.shape[1] != conv2.shape[0] * 7 * 7:
        raise CheckpointError(f"{where}: FC input {fc1.shape[1]} is not {conv2.shape[0]} x 7 x 7: "
                              f"not Wong et al.'s MNIST net on 28x28 inputs")
    model = fast_at_mnist_net(num_classes=int(mapped["head.weight"].shape[0]),
                              input_shape=(int(conv1.shape[1]), 28, 28),
                              widths=(int(conv1.shape[0]), int(conv2.shape[0])), fc_dim=int(fc1.shape[0]))
    return _load(model, mapped, "fast-AT MNIST net", where)


def from_released(state: Mapping[str, Tensor], *, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None, entry: str | None = None,
                     where: str = "the file") -> Classifier:
    """The advgeom model holding a released state dict's weights, in eval mode:
    ``wrn`` or ``preact_resnet`` for a RobustBench file, with the normalization inside
    (see the module doc);
    ``entry`` names a known zoo entry, whose architecture the file must hold. A file of
    Wong et al.'s MNIST network gives ``fast_at_mnist_net`` (no normalization: theirs
    has none, so ``mean``/``std``/``entry`` are refused)."""
    known = None if entry is None else zoo_entry(entry)
    if known is not None and (mean is not None or std is not None):
        raise CheckpointError(f"give a zoo entry or mean/std, not both (entry {entry!r} has its own)")
    if (mean is None) != (std is None):
        raise CheckpointError("give both mean and std (or neither)")
    family = zoo_family(state, where)
    mapped = advgeom_names(state, family, where)
    if family == "fast-AT MNIST net":
        if entry is not None or mean is not None:
            raise CheckpointError(f"{where} holds Wong et al.'s MNIST net, which reads raw [0,1] pixels: "
                                  f"no zoo entry or mean/std applies")
        return _fast_at_model(mapped, where)
    for key in ("head.weight", "body.conv1.weight"):
        if key not in mapped:
            raise CheckpointError(f"{where}: a RobustBench {family} state dict without {key.split('.', 1)[1]}")
    label, build, kwargs = (_wrn_spec if family == "WideResNet" else _preact_spec)(mapped, where)
    if known is not None and known.arch != label:
        raise CheckpointError(f"{where} holds a {label}, but zoo entry {entry!r} is a {known.arch}")
    if mean is None and "mu" in state and "sigma" in state:
        mean, std = state["mu"].flatten().tolist(), state["sigma"].flatten().tolist()
    elif mean is None and known is not None and known.mean is not None:
        mean, std = known.mean, known.std
    classes = int(mapped["head.weight"].shape[0])
    model = build(num_classes=classes, input_shape=(int(mapped["body.conv1.weight"].shape[1]), 32, 32),
                  mean=list(mean or [0.0]), std=list(std or [1.0]), **kwargs)
    return _load(model, mapped, label, where)


def _load(model: nn.Module, mapped: dict[str, Tensor], label: str, where: str) -> nn.Module:
    """``model`` with ``mapped`` loaded (its normalization and missing batch counters
    kept); one :class:`CheckpointError` naming the first mismatch."""
    ours = model.state_dict()
    mapped.setdefault("head.bias", torch.zeros_like(ours["head.bias"]))
    mapped = {**{k: v for k, v in ours.items() if k.startswith("normalize.")}, **mapped}
    for k, v in ours.items():   # older files lack the batch counters; they do not change outputs
        if k.endswith("num_batches_tracked"):
            mapped.setdefault(k, v)
    missing, extra = sorted(set(ours) - set(mapped)), sorted(set(mapped) - set(ours))
    bad = [k for k in set(ours) & set(mapped) if ours[k].shape != mapped[k].shape]
    if missing or extra or bad:
        what = (f"missing {', '.join(missing[:3])}" if missing else
                f"unexpected {', '.join(extra[:3])}" if extra else f"shape of {min(bad)}")
        raise CheckpointError(f"{where}: weights do not match a {label} ({what})")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()})
    return model.eval()
