"""Models from where users keep them: a RobustBench model-zoo checkpoint (Croce et al.
2021, "RobustBench: a standardized adversarial robustness benchmark") of a WideResNet,
mapped onto advgeom's own :func:`~advgeom.models.resnet.wrn`.

RobustBench's ``WideResNet`` (from the TRADES code, Zhang et al. 2019) names its
parameters ``conv1``, ``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}``,
``bn1`` (the final batch norm) and ``fc``; its blocks compute exactly advgeom's
pre-activation blocks (the 1x1 shortcut reads the pre-activated input), and its
``avg_pool2d(out, 8)`` on 32x32 inputs is advgeom's global average pool. An unused
``sub_block1`` (TRADES' WRN-34-10 files) is dropped; a head without bias
(``bias_last=False``) gets a zero bias. Depth, width and classes are read from the
tensors' shapes. Normalization, when the entry has one, goes inside the model
(DESIGN.md "Contracts"): the ``mu``/``sigma`` buffers some zoo classes store in the
file, or ``mean``/``std`` given by the user (the file wins only when none is given).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from advgeom.errors import CheckpointError
from advgeom.models.base import Classifier
from advgeom.models.resnet import wrn

_BLOCK = re.compile(r"block([123])\.layer\.(\d+)\.(bn1|conv1|bn2|conv2|convShortcut)\.(.+)")
_RENAME = {"convShortcut": "shortcut"}
_TOP = {"conv1.": "body.conv1.", "bn1.": "body.bn.", "fc.": "head."}


def state_dict_of(obj: Any, where: str = "the file") -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint: the object itself or its
    ``state_dict``/``model_state_dict``/``model`` entry, with DataParallel's ``module.``
    prefixes removed."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{where} holds no state dict of tensors")
    return {(k.removeprefix("module.")): v for k, v in obj.items()}


def advgeom_names(state: Mapping[str, Tensor], where: str = "the file") -> dict[str, Tensor]:
    """RobustBench WideResNet parameter names mapped onto advgeom's ``wrn`` (the
    normalization buffers ``mu``/``sigma`` and an unused ``sub_block1`` left out)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for name, t in state.items():
        if name in ("mu", "sigma") or name.startswith("sub_block1."):
            continue
        m = _BLOCK.fullmatch(name)
        if m:
            stage, i, layer, rest = m.groups()
            out[f"body.stage{stage}.{i}.{_RENAME.get(layer, layer)}.{rest}"] = t
            continue
        top = next((p for p in _TOP if name.startswith(p)), None)
        if top is None:
            unknown.append(name)
        else:
            out[_TOP[top] + name[len(top):]] = t
    if unknown or "fc.weight" not in state or "block1.layer.0.conv1.weight" not in state:
        shown = ", ".join(unknown[:3]) or "no fc.weight / block1.layer.0.conv1.weight"
        raise CheckpointError(f"{where} is not a RobustBench WideResNet state dict ({shown}); "
                              "advgeom maps WideResNet (TRADES-style) zoo files only")
    return out


def wrn_from_robustbench(state: Mapping[str, Tensor], *, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None, where: str = "the file") -> Classifier:
    """advgeom's ``wrn`` holding the weights of a RobustBench WideResNet state dict, in
    eval mode, with the entry's normalization inside (see the module doc)."""
    mapped = advgeom_names(state, where)
    classes, width = (int(s) for s in mapped["head.weight"].shape)
    blocks = len({k.split(".")[2] for k in mapped if k.startswith("body.stage1.")})
    if width % 64 or blocks < 1:
        raise CheckpointError(f"{where}: a head of width {width} is not a WideResNet's (64 x widen factor)")
    channels = int(mapped["body.conv1.weight"].shape[1])
    if mean is None and std is None and "mu" in state and "sigma" in state:
        mean, std = state["mu"].flatten().tolist(), state["sigma"].flatten().tolist()
    elif (mean is None) != (std is None):
        raise CheckpointError("give both mean and std (or neither)")
    model = wrn(depth=6 * blocks + 4, widen_factor=width // 64, num_classes=classes,
                input_shape=(channels, 32, 32), mean=list(mean or [0.0]), std=list(std or [1.0]))
    mapped.setdefault("head.bias", torch.zeros(classes))
    ours = model.state_dict()
    mapped = {**{k: v for k, v in ours.items() if k.startswith("normalize.")}, **mapped}
    for k, v in ours.items():   # older files lack the batch counters; they do not change outputs
        if k.endswith("num_batches_tracked"):
            mapped.setdefault(k, v)
    missing, extra = sorted(set(ours) - set(mapped)), sorted(set(mapped) - set(ours))
    bad = [k for k in set(ours) & set(mapped) if ours[k].shape != mapped[k].shape]
    if missing or extra or bad:
        what = (f"missing {', '.join(missing[:3])}" if missing else
                f"unexpected {', '.join(extra[:3])}" if extra else f"shape of {min(bad)}")
        raise CheckpointError(f"{where}: weights do not match a WRN-{6 * blocks + 4}-{width // 64} ({what})")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in mapped.items()})
    return model.eval()
