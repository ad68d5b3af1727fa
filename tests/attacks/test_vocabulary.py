"""The shared argument vocabulary, read the same way by every registered attack (issue 30):
eps as text ("8/255", as on the command line), norm names in any case, another library's
option names refused by name, and a warning for a linf eps above 1."""
from __future__ import annotations

import warnings

import pytest
import torch
from test_contract import call, meta  # same directory: pytest puts it on sys.path

from advgeom.attacks.base import canonical_norm
from advgeom.attacks.spec import parse_eps
from advgeom.errors import AdvgeomError
from advgeom.registry import get, names
from advgeom.seeding import make_generator

ATTACKS = names("attack")


def _run(name, tiny, **kw):
    model, source, x, y = tiny
    return call(name, model, x, y, source=source, generator=make_generator(0), **kw)


@pytest.mark.parametrize("name", ATTACKS)
def test_eps_as_a_fraction_and_norm_in_any_case_give_the_same_answer(name, tiny):
    norm = meta(name).norms[0]
    eps, text = (8 / 255, "8/255") if norm == "linf" else (0.5, "1/2")
    ref = _run(name, tiny, eps=eps, norm=norm)
    for spelling in (norm.upper(), norm.capitalize()):   # LINF/Linf, L2
        with warnings.catch_warnings():
            warnings.simplefilter("error")               # no spurious eps warning
            got = _run(name, tiny, eps=text, norm=spelling)
        assert torch.equal(got, ref)


@pytest.mark.parametrize("name", ATTACKS)
def test_torchattacks_alpha_is_refused_naming_step_size(name, tiny):
    norm = meta(name).norms[0]
    with pytest.raises(AdvgeomError, match=r"alpha=.*step_size="):
        _run(name, tiny, eps=0.1, norm=norm, alpha=0.01)


@pytest.mark.parametrize("name", [n for n in ATTACKS if "linf" in meta(n).norms])
def test_linf_eps_above_one_warns_and_l2_does_not(name, tiny):
    with pytest.warns(UserWarning, match="linf eps 8 exceeds 1.*8/255"):
        _run(name, tiny, eps=8, norm="Linf")
    if "l2" in meta(name).norms:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _run(name, tiny, eps=2.0, norm="L2")


def test_default_norm_counts_and_per_sample_eps_is_checked(tiny):
    model, _, x, y = tiny
    pgd = get("attack", "pgd")
    with pytest.warns(UserWarning, match="per-sample"):   # norm not given: pgd's default linf
        pgd(model, x, y, eps=torch.full((x.shape[0],), 0.1).index_fill(0, torch.tensor([3]), 4.0),
            steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(model, x, y, eps=torch.full((x.shape[0],), 1.0), steps=2)   # 1 is the box: fine
        get("attack", "deepfool")(model, x, y, eps=float("inf"), norm="linf", steps=2)  # unbounded


def test_bad_values_stay_one_clear_error(tiny):
    model, _, x, y = tiny
    pgd = get("attack", "pgd")
    with pytest.raises(AdvgeomError, match="not a number .*8/255"):
        pgd(model, x, y, eps="eight", steps=2)
    with pytest.raises(AdvgeomError, match="unsupported norm 'l3'"):
        pgd(model, x, y, eps=0.1, norm="L3", steps=2)
    assert [canonical_norm(n) for n in ("Linf", "LINF", "linf", " L2", "l2")] == \
        ["linf", "linf", "linf", "l2", "l2"]
    assert parse_eps("8/255") == [8 / 255]   # the one fraction parser, shared with the CLI
