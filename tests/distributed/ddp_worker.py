"""Run by tests/distributed/test_torchrun.py, under torchrun or as one process.

``python ddp_worker.py OUT [kill_at [CHECKPOINT]]``: trains the toy config (rank r writes
under ``OUT/root-r``: only rank 0's directory may appear), evaluates the trained model
(or the model of CHECKPOINT) on 64 test points and writes, from rank 0 only,
``OUT/result.json`` (parameters, the rows of every rank). ``kill_at`` > 0: rank 1 (or
the only rank) kills itself after that many steps."""
import json
import os
import signal
import sys
from pathlib import Path

import torch

from advgeom.data import load
from advgeom.distributed import all_gather_objects, init_from_env
from advgeom.eval.runner import evaluate
from advgeom.train import TrainConfig, fit, load_model

CFG = TrainConfig(dataset="robust_features_2d", model="relu_mlp",
                  model_kwargs={"input_dim": 2, "width": 32, "depth": 2, "num_outputs": 2,
                                "batch_norm": False},
                  objective="ce", batch_size=30, iterations=40, checkpoint_every=5, seed=3, lr=1e-2)


def main() -> None:
    out, kill_at = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0
    other = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    w, device = init_from_env("cpu")
    torch.set_num_threads(1)

    def on_step(step: int) -> None:
        if kill_at and step == kill_at and (w.rank == 1 or w.size == 1):
            os.kill(os.getpid(), signal.SIGKILL)

    res = fit(CFG, root=out / f"root-{w.rank}", progress=False, on_step=on_step)
    data = load("robust_features_2d", "test")
    ev = evaluate(load_model(other) if other else res.model, data, "pgd:steps=5,fgsm", "0.05,0.2", n=64, batch_size=10,
                  progress=False, checks=False, seed=1)
    rows = sorted((r.attack, r.eps, r.metric, r.value) for r in ev.rows)
    params = {k: v.tolist() for k, v in res.model.state_dict().items()}
    every = all_gather_objects({"rank": w.rank, "rows": rows, "params": params,
                                "resumed_from": res.resumed_from})
    if w.main:
        (out / "result.json").write_text(json.dumps({"world_size": w.size, "ranks": every}))


if __name__ == "__main__":
    main()
