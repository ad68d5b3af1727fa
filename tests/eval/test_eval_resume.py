"""Batch-level resumability through the results store: a killed run loses at most the
unit in flight, a rerun skips finished units and reproduces the uninterrupted rows."""
import pytest
import torch

from advgeom.eval import AttackSpec, evaluate
from advgeom.registry import get
from advgeom.results import ResultStore


class Interrupted(RuntimeError):
    pass


def flaky_pgd(fail_on_call: int, calls: list):
    """Real pgd that raises on its ``fail_on_call``-th call, once (a simulated kill)."""
    state = {"raised": False}

    def attack(model, inputs, labels, *, eps, norm="linf", generator=None, **kw):
        calls.append(int(inputs.shape[0]))
        if len(calls) == fail_on_call and not state["raised"]:
            state["raised"] = True
            raise Interrupted("killed")
        return get("attack", "pgd")(model, inputs, labels, eps=eps, norm=norm, generator=generator, **kw)

    return attack


def _eval(model, x, y, attack, store=None):
    return evaluate(model, (x, y), ["fgsm", AttackSpec("flaky_pgd", {"steps": 5}, attack=attack)],
                    [0.05, 0.1], batch_size=32, n=96, store=store, experiment="resume",
                    model_name="mlp", seed=3, progress=False)


def test_resume_after_interruption(blobs_mlp, tmp_path):
    model, x, y = blobs_mlp
    reference = _eval(model, x, y, flaky_pgd(0, []))          # never fails, no store

    store = ResultStore(tmp_path / "results.sqlite")
    calls: list = []
    attack = flaky_pgd(5, calls)                                # batch 2, eps 0.05
    with pytest.raises(Interrupted):
        _eval(model, x, y, attack, store)
    assert store.query(experiment="resume") == []               # no partial rows
    # 3 batches x (clean + 2 eps x 2 attacks) = 15 units, run eps by eps within a batch;
    # batch 2 died in pgd@0.05, so it and the units after it (fgsm@0.1, pgd@0.1) are missing
    n_before = len(calls)
    resumed = _eval(model, x, y, attack, store)
    assert resumed.units_skipped == 12
    assert resumed.units_run == 3 + 1                           # 3 missing units + the unbounded check
    assert len(calls) - n_before == 2                           # only the 2 lost units re-attacked
    assert resumed.rows == reference.rows                       # identical to the uninterrupted run
    assert sorted(store.query(experiment="resume"), key=lambda r: r.key()) == \
        sorted(resumed.rows, key=lambda r: r.key())

    # a third run computes nothing and gives the same rows again
    n_before = len(calls)
    again = _eval(model, x, y, attack, store)
    assert again.units_run == 0 and again.units_skipped == 16
    assert len(calls) == n_before
    assert again.rows == reference.rows


def test_units_are_keyed_by_weights_and_seed(blobs_mlp, tmp_path):
    import copy

    model, x, y = blobs_mlp
    store = ResultStore(tmp_path / "results.sqlite")
    run = lambda m, seed: evaluate(m, (x, y), ["fgsm", "pgd:steps=3"], [0.05], batch_size=48,  # noqa: E731
                                   n=96, store=store, model_name="mlp", seed=seed, progress=False)
    assert run(model, 0).units_run == 2 * 3 + 1
    other_seed = run(model, 1)            # clean units reused; attack units (seeded) recomputed
    assert other_seed.units_skipped == 2 and other_seed.units_run == 4 + 1
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[0].bias.add_(0.01)
    assert run(changed, 0).units_skipped == 0   # other weights: nothing reused
