"""The points an evaluation attacks, from tensors, a torch ``Dataset`` or a ``DataLoader``
(used by :func:`advgeom.eval.runner.evaluate`).

The evaluation keys every unit by a hash of the whole point set (its inputs and labels),
so it knows that hash before it attacks anything. Tensors are hashed as they are. A
loader with a fixed order (``shuffle=False``; a ``Dataset`` is read in index order) is read
twice, in its own order and cut into the evaluation's batches: a first pass checks the
inputs and hashes them, keeping only the labels (8 bytes a point), the first rows (for the
sanity checks) and one digest per batch; the second pass attacks batch by batch and checks
each batch's digest, so a loader that gives other data the second time (random transforms)
is one clear error, never a cache entry under the wrong key. The hash is that of the same
points as tensors (:func:`advgeom.hashing.tensor_hash`), so a loader and its tensors share
rows and cached units. A loader with a random sampler (``shuffle=True``) cannot be read twice
in one order: it is read once into memory, in the order it gives, with a warning that its
rows describe that draw and cannot be compared with a rerun's. So can a loader of unknown
length (an ``IterableDataset``).
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from advgeom.errors import AdvgeomError
from advgeom.eval.units import unpack
from advgeom.hashing import tensor_bytes, tensor_hash, tensor_header
from advgeom.types import check_inputs


class Points:
    """Points held as tensors: ``n``, ``digest`` (the point-set hash), ``num_classes`` and
    ``name`` when the data knows them, ``labels`` (all), ``head_x``/``head_y`` (the first
    rows; here all of them) and :meth:`batch`."""

    def __init__(self, x: Tensor, y: Tensor, num_classes: int | None, name: str, batch_size: int,
                 check_classes: int | None = None) -> None:
        check_inputs(x, y, check_classes if num_classes is None else num_classes)
        self.head_x, self.head_y, self.labels = x, y, y
        self.n, self.num_classes, self.name, self.batch_size = len(y), num_classes, name, batch_size
        self.digest = tensor_hash(x, y)

    @property
    def batches(self) -> int:
        return -(-self.n // self.batch_size)

    def batch(self, b: int) -> tuple[Tensor, Tensor]:
        """The ``b``-th batch of ``batch_size`` points (calls come in increasing ``b``)."""
        s0 = b * self.batch_size
        return self.head_x[s0:s0 + self.batch_size], self.head_y[s0:s0 + self.batch_size]


class StreamedPoints(Points):
    """Points read from a loader with a fixed order, two passes (see the module doc)."""

    def __init__(self, loader: DataLoader, total: int, name: str, batch_size: int, head: int) -> None:
        self.loader, self.n, self.batch_size = loader, total, batch_size
        self.name = name
        self.num_classes = getattr(loader.dataset, "num_classes", None)
        h, digests, labels, heads = hashlib.sha256(), [], [], []
        kept = 0
        for xb, yb in _chunks(loader, batch_size, total):
            check_inputs(xb, yb)
            if not digests:
                h.update(tensor_header(xb, total))
                first = xb
            elif xb.dtype != first.dtype or xb.shape[1:] != first.shape[1:]:
                raise AdvgeomError(f"the loader's batches differ in dtype or shape: {first.dtype} "
                                   f"{tuple(first.shape[1:])}, then {xb.dtype} {tuple(xb.shape[1:])}")
            h.update(tensor_bytes(xb))
            digests.append(tensor_hash(xb, yb))
            labels.append(yb)
            if kept < head:
                heads.append(xb[:head - kept])
                kept += len(heads[-1])
        if not digests:
            raise AdvgeomError("the loader gave no points")
        self.labels = torch.cat(labels)
        if len(self.labels) != total:
            raise AdvgeomError(f"the loader gave {len(self.labels)} points, its sampler promised {total}")
        h.update(tensor_header(self.labels) + tensor_bytes(self.labels))
        self.digest, self.digests = h.hexdigest(), digests
        self.head_x, self.head_y = torch.cat(heads), self.labels[:kept]
        self._stream: Iterator[tuple[Tensor, Tensor]] | None = None
        self._next = 0

    def batch(self, b: int) -> tuple[Tensor, Tensor]:
        """Batch ``b`` from the second pass, checked against the first pass's digest."""
        if self._stream is None or b < self._next:
            self._stream, self._next = _chunks(self.loader, self.batch_size, self.n), 0
        while True:
            got = next(self._stream, None)
            if got is None or tensor_hash(*got) != self.digests[self._next]:
                raise AdvgeomError(f"the loader gave other points on its second pass (batch "
                                   f"{self._next}): evaluate needs a loader that gives the same data "
                                   "each time (no random transforms or sampling)")
            self._next += 1
            if self._next - 1 == b:
                return got


def _chunks(loader: Any, batch_size: int, total: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The first ``total`` points of ``loader``, in its order, as ``(inputs, labels)``
    batches of ``batch_size`` (the last one shorter), whatever batches the loader gives."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    have = seen = 0
    for item in loader:
        if seen >= total:
            break
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Tensor)):
            raise AdvgeomError("each batch of the loader must be (inputs, labels) tensors, "
                               f"got {type(item).__name__}")
        x, y = item[0], torch.as_tensor(item[1])
        x, y = x[:total - seen], y[:total - seen]
        seen += len(x)
        xs.append(x)
        ys.append(y)
        have += len(x)
        while have >= batch_size:
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            yield x_all[:batch_size], y_all[:batch_size]
            xs, ys, have = [x_all[batch_size:]], [y_all[batch_size:]], have - batch_size
    if have:
        yield torch.cat(xs), torch.cat(ys)


def _random_order(loader: DataLoader) -> bool:
    """Whether the loader draws its order at random (``shuffle=True`` and kin)."""
    sampler = getattr(loader.batch_sampler, "sampler", None) or loader.sampler
    return not isinstance(sampler, SequentialSampler) and (
        isinstance(sampler, RandomSampler) or "Random" in type(sampler).__name__
        or bool(getattr(sampler, "shuffle", False)))


def open_points(data: Any, n: int | None, batch_size: int, head: int,
                num_classes: int | None = None) -> Points:
    """The points of ``data`` (TensorData, ``(inputs, labels)``, ``Dataset`` or
    ``DataLoader``), its first ``n``; ``head``: how many first rows the checks need;
    ``num_classes``: the model's, checked against the labels of tensor data."""
    if n is not None and n <= 0:
        raise AdvgeomError(f"n must be positive, got {n}")
    if isinstance(data, Dataset) and not hasattr(data, "images"):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if not isinstance(data, DataLoader):
        x, y, k, name = unpack(data, n)
        return Points(x, y, k, name, batch_size, num_classes)
    name = str(getattr(data.dataset, "name", "") or "")
    size = None if isinstance(data.dataset, IterableDataset) else _length(data)
    if _random_order(data) or size is None:
        if _random_order(data):
            warnings.warn("evaluating a loader with a random sampler (shuffle=True): its points are "
                          "read once into memory in the drawn order, and its rows cannot be compared "
                          "with a rerun's (another draw is another point set)", UserWarning, stacklevel=3)
        read = list(_chunks(data, batch_size, n if n is not None else 2**62))
        if not read:
            raise AdvgeomError("the loader gave no points")
        return Points(torch.cat([x for x, _ in read]), torch.cat([y for _, y in read]),
                      getattr(data.dataset, "num_classes", None), name, batch_size, num_classes)
    total = size if n is None else min(n, size)
    return StreamedPoints(data, total, name, batch_size, head)


def _length(loader: DataLoader) -> int | None:
    """How many points the loader gives (its sampler's length), or None."""
    try:
        sampler = loader.sampler
        return len(sampler) if loader.batch_sampler is None or not loader.drop_last \
            else len(loader) * int(loader.batch_size or 1)
    except TypeError:
        return None
