"""Run by tests/distributed/test_torchrun.py under torchrun: the ``advgeom`` command line,
with rank 1 killing itself (SIGKILL) after ``ADVGEOM_KILL_AT`` training steps."""
import os
import signal

import advgeom.train
from advgeom.cli import app

KILL_AT = int(os.environ.get("ADVGEOM_KILL_AT", "3"))
_fit = advgeom.train.fit


def fit(*args, **kwargs):
    def on_step(step: int) -> None:
        if step == KILL_AT and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)

    return _fit(*args, on_step=on_step, **kwargs)


advgeom.train.fit = fit   # the CLI imports it from advgeom.train when it runs
app(prog_name="advgeom")
