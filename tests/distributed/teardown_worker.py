"""Run by tests/distributed/test_torchrun.py under torchrun: join the group the way
advgeom does, import ``torch._dynamo`` afterwards (fit and evaluate do, through torch),
leave the group, and write this rank's remaining gloo threads (``/proc/self/task``) to
``OUT/rank<r>.json`` (one file per rank: two ranks printing to one pipe can interleave)."""
import glob
import json
import sys
from pathlib import Path

import torch.distributed as dist

from advgeom.distributed import all_gather_objects, init_from_env

out = Path(sys.argv[1])
w, _ = init_from_env("cpu")
all_gather_objects(w.rank)
import torch._dynamo  # noqa: E402,F401

dist.destroy_process_group()
names = [open(f"{t}/comm").read().strip() for t in glob.glob("/proc/self/task/*")]
(out / f"rank{w.rank}.json").write_text(
    json.dumps({"rank": w.rank, "gloo_threads": [n for n in names if "gloo" in n]}))
