"""Deterministic mini-batches of a training run: epoch-seeded permutations of the
training split (its last ``monitor.size`` points held out for the monitor), or online
sampling for generated data sets."""
from __future__ import annotations

import torch

from advgeom.data import load
from advgeom.errors import ConfigError
from advgeom.seeding import derive_seed
from advgeom.train.config import TrainConfig


class Batches:
    """Deterministic mini-batches: epoch-seeded permutations, or online sampling."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.data = load(cfg.dataset, "train", **cfg.dataset_kwargs)
        self.online = callable(getattr(self.data, "sample_batch", None))
        n = len(self.data) if not self.online else 0
        held = cfg.monitor.size if cfg.monitor.every > 0 else 0
        if held and not self.online:
            if held >= n:
                raise ConfigError(f"monitor.size={held} leaves no training data ({n} points)")
            n -= held  # the last ``held`` points are the monitor's, never trained on
        if cfg.train_size and not self.online:
            n = min(n, cfg.train_size)
        self.n = n
        self.held = held
        self.per_epoch = max(1, n // cfg.batch_size) if not self.online else 1
        self._perm: tuple[int, torch.Tensor] | None = None
        # on a GPU the whole split moves to the device once (no host-to-device copy per step)
        self.images = None if self.online else self.data.images
        self.labels = None if self.online else self.data.labels
        if device.type == "cuda" and not self.online:
            self.images, self.labels = self.images.to(device), self.labels.to(device)

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The monitor's fixed points: the end of the split (or a seeded online draw);
        none when the monitor holds none out."""
        if self.held == 0:
            return torch.empty(0, device=self.device), torch.empty(0, dtype=torch.long, device=self.device)
        if self.online:
            g = torch.Generator().manual_seed(derive_seed("monitor-data", self.cfg.seed))
            x, y = self.data.sample_batch(self.held, g)
        else:
            x, y = self.images[-self.held:], self.labels[-self.held:]
        return x.to(self.device), y.to(self.device)

    def curves(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The monitor's training-curve points: the first ``monitor.train_points`` of the
        training split (trained on) and the first ``monitor.test_points`` of the test split."""
        mc, out = self.cfg.monitor, {}
        if mc.train_points > 0:
            if self.online:
                raise ConfigError(f"monitor.train_points needs a fixed training split; {self.cfg.dataset!r} "
                                  "is sampled online")
            k = min(mc.train_points, self.n)
            out["train"] = (self.images[:k].to(self.device), self.labels[:k].to(self.device))
        if mc.test_points > 0:
            test = load(self.cfg.dataset, "test", **self.cfg.dataset_kwargs)
            k = min(mc.test_points, len(test))
            out["test"] = (test.images[:k].to(self.device), test.labels[:k].to(self.device))
        return out

    def total_steps(self) -> int:
        if self.cfg.iterations > 0:
            return self.cfg.iterations
        return self.cfg.epochs * self.per_epoch

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if self.online:
            g = torch.Generator().manual_seed(derive_seed("batch", cfg.seed, step))
            x, y = self.data.sample_batch(cfg.batch_size, g)
        else:
            epoch, k = divmod(step, self.per_epoch)
            if self._perm is None or self._perm[0] != epoch:   # one permutation per epoch
                g = torch.Generator().manual_seed(derive_seed("perm", cfg.seed, epoch))
                self._perm = (epoch, torch.randperm(self.n, generator=g))
            idx = self._perm[1][k * cfg.batch_size:(k + 1) * cfg.batch_size].to(self.images.device)
            x, y = self.images[idx], self.labels[idx]
        return x.to(self.device), y.to(self.device)
