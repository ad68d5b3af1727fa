"""evaluate on a torch DataLoader or Dataset (advgeom.eval.points), and accuracies as exact
fractions of counts (EvalResult.accuracy / percent; issue 30)."""
import warnings

import pytest
import torch
from eval_fakes import fake_attack, spec, threshold_data
from torch.utils.data import DataLoader, Dataset, TensorDataset

from advgeom.data.base import TensorData
from advgeom.errors import AdvgeomError
from advgeom.eval import CheckConfig, evaluate
from advgeom.eval.bookkeeping import percent
from advgeom.eval.points import _chunks
from advgeom.results.store import ResultStore

NO_UNBOUNDED = CheckConfig(unbounded_subset=0)
ATTACKS = "pgd:steps=3,fgsm"


def _same(a, b):
    assert [(r.attack, r.eps, r.metric, r.value, r.points, r.n) for r in a.rows] == \
        [(r.attack, r.eps, r.metric, r.value, r.points, r.n) for r in b.rows]
    assert a.robust.keys() == b.robust.keys()
    assert all(torch.equal(a.robust[k], b.robust[k]) for k in a.robust)
    assert torch.equal(a.clean_correct, b.clean_correct)


def _run(model, data, **kw):
    return evaluate(model, data, ATTACKS, [0.05, 0.1], progress=False, batch_size=48, **kw)


def test_a_loader_or_dataset_gives_exactly_the_tensor_result(blobs_mlp):
    model, x, y = blobs_mlp
    ref = _run(model, (x, y))
    for data in (DataLoader(TensorDataset(x, y), batch_size=7),   # batches that do not divide 48
                 DataLoader(TensorDataset(x, y), batch_size=100),
                 TensorDataset(x, y)):
        _same(_run(model, data), ref)
    _same(_run(model, DataLoader(TensorDataset(x, y), batch_size=7), n=100), _run(model, (x, y), n=100))


def test_a_loader_reuses_the_units_of_its_tensors(blobs_mlp, tmp_path):
    model, x, y = blobs_mlp
    store = ResultStore(tmp_path / "r.sqlite")
    first = _run(model, (x, y), store=store)
    again = _run(model, DataLoader(TensorDataset(x, y), batch_size=32), store=store)
    assert first.units_run > 0 and again.units_run == 0 and again.units_skipped == first.units_run


class _Counting(Dataset):
    """A dataset that counts its reads (is the loader streamed, not gathered twice?)."""

    def __init__(self, x, y, jitter: bool = False):
        self.x, self.y, self.jitter, self.reads = x, y, jitter, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.reads += 1
        x = self.x[i]
        if self.jitter and self.reads > len(self.y):   # a "random transform" on the second pass
            x = (x + 0.01).clamp(0, 1)
        return x, int(self.y[i])


def test_a_fixed_order_loader_is_read_twice_in_order_and_a_changing_one_refused(blobs_mlp):
    model, x, y = blobs_mlp
    ds = _Counting(x, y)
    _same(_run(model, DataLoader(ds, batch_size=16)), _run(model, (x, y)))
    assert ds.reads == 2 * len(y)   # one hashing pass, one attacking pass
    with pytest.raises(AdvgeomError, match="other points on its second pass"):
        _run(model, DataLoader(_Counting(x, y, jitter=True), batch_size=16))


def test_a_shuffled_loader_warns_and_its_identity_is_the_data_seen(blobs_mlp):
    model, x, y = blobs_mlp
    torch.manual_seed(3)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    with pytest.warns(UserWarning, match="random sampler.*cannot be compared"):
        got = _run(model, loader)
    assert got.rows[0].points != _run(model, (x, y)).rows[0].points   # another order: another set
    torch.manual_seed(3)   # the same draw, replayed as tensors, is the same evaluation
    xs, ys = zip(*DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True))
    _same(got, _run(model, (torch.cat(xs), torch.cat(ys))))


def test_rebatching_keeps_every_point_in_order():
    x, y = torch.arange(23.0).view(23, 1) / 23, torch.arange(23)
    chunks = list(_chunks(DataLoader(TensorDataset(x, y), batch_size=5), 4, 22))
    assert [len(c[0]) for c in chunks] == [4, 4, 4, 4, 4, 2]
    assert torch.equal(torch.cat([c[1] for c in chunks]), y[:22])
    with pytest.raises(AdvgeomError, match=r"\(inputs, labels\)"):
        list(_chunks([{"x": x}], 4, 23))


# ---------------------------------------------------------------------------- exact accuracies


def test_accuracy_is_an_exact_fraction_and_rows_an_exact_percent(threshold_model):
    x, y = threshold_data(1000)
    res = evaluate(threshold_model, TensorData(x, y, 2, "t"), [spec("f", fake_attack(set(range(663)), n=1000))],
                   [0.1], progress=False, check_config=NO_UNBOUNDED)
    assert res.accuracy("none") == 1.0 and res.correct("f", 0.1) == 337
    assert res.accuracy("f", 0.1) == 0.337 == res.accuracy()   # worst case at the largest eps
    assert res.percent("f", 0.1) == 33.7 == res.value("robust_accuracy", "f", 0.1)
    assert 100.0 * float(torch.tensor([True] * 337 + [False] * 663).float().mean()) != 33.7  # the old noise
    assert percent(torch.tensor([True] * 5 + [False] * 3)) == 62.5
    assert percent(torch.zeros(0, dtype=torch.bool)) == 0.0
    with pytest.raises(KeyError):
        res.accuracy("f", 0.3)


def test_the_api_example_prints_percent_from_fractions(threshold_model):
    x, y = threshold_data(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(threshold_model, (x, y), [spec("f", fake_attack({0, 1, 2}))], [0.1], progress=False,
                       check_config=NO_UNBOUNDED)
    assert f"{res.accuracy():.1%}" == "62.5%" and res.accuracy() == 5 / 8


class _NaNOnSome(torch.nn.Module):
    """The threshold model's logits, NaN on every point whose x1 > 0.5 (the first point
    of the data is fine, so only the clean pass can notice)."""

    def __init__(self) -> None:
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        z = self.k * (x[:, 0] - 0.5)
        out = torch.stack([torch.zeros_like(z), z], dim=1)
        return torch.where((x[:, 1] > 0.5).unsqueeze(1), torch.full_like(out, float("nan")), out)


def test_nan_logits_are_an_error_not_class_0():
    x, y = threshold_data(64)
    x[0, 1] = 0.0   # the probe's point is finite
    with pytest.raises(AdvgeomError, match=r"non-finite logits \(NaN or inf\) on \d+ of 64 clean inputs"):
        evaluate(_NaNOnSome().eval(), (x, y), "fgsm", [0.1], progress=False, check_config=NO_UNBOUNDED)


def test_an_attack_of_another_norm_is_refused_before_any_pass(threshold_model):
    x, y = threshold_data(16)
    y = 1 - y   # every point misclassified: no attack would ever be called
    with pytest.raises(AdvgeomError, match="attack 'square:steps=10' does not support norm 'l2'"):
        evaluate(threshold_model, (x, y), "square:steps=10,fgsm", [0.5], norm="l2", progress=False,
                 check_config=NO_UNBOUNDED)


def test_lookups_name_what_was_evaluated_and_eps_takes_tensors(threshold_model):
    import numpy as np

    x, y = threshold_data(32)
    res = evaluate(threshold_model, (x, y), [spec("f", fake_attack({0}))], torch.tensor(0.1), progress=False,
                   check_config=NO_UNBOUNDED)
    assert res.eps == [pytest.approx(0.1)]
    assert evaluate(threshold_model, (x, y), [spec("f", fake_attack({0}))], np.float32(0.1), progress=False,
                    check_config=NO_UNBOUNDED).eps == res.eps
    with pytest.raises(AdvgeomError, match=r"no outcome of attack 'nope' at eps 0\.1; evaluated: none, f@0\.1"):
        res.accuracy("nope", 0.1)
    with pytest.raises(KeyError):   # still a KeyError for code that catches one
        res.value("nope")
    with pytest.raises(AdvgeomError, match="eps is required"):
        evaluate(threshold_model, (x, y), "fgsm", None, progress=False)


@pytest.mark.parametrize("kw, match", [({"n": 2.5}, "n must be an integer"), ({"n": 0}, "n must be a positive"),
                                       ({"batch_size": "8"}, "batch_size must be an integer"),
                                       ({"seed": "a"}, "seed must be an integer"),
                                       ({"strict": "no"}, "strict must be True or False"),
                                       ({"store": "x.sqlite"}, "store must be a ResultStore")])
def test_evaluate_checks_its_arguments_first(threshold_model, kw, match):
    x, y = threshold_data(8)
    with pytest.raises(AdvgeomError, match=match):
        evaluate(threshold_model, (x, y), "fgsm", [0.1], progress=False, **kw)
    with pytest.raises(AdvgeomError, match="model must be a torch.nn.Module"):
        evaluate(lambda t: t, (x, y), "fgsm", [0.1], progress=False)
