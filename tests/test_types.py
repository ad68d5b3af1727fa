import pytest
import torch

from advgeom.errors import AdvgeomError, one_line
from advgeom.types import check_eps, check_inputs


def test_good_inputs_pass():
    check_inputs(torch.rand(4, 1, 5, 5), torch.tensor([0, 1, 2, 3]), num_classes=4)
    check_eps(0.3, 4)
    check_eps(torch.full((4,), 0.1), 4)


@pytest.mark.parametrize("x,y,msg", [
    (torch.full((2, 3), float("nan")), None, "NaN"),
    (torch.rand(2, 3) + 1.5, None, r"\[0,1\]"),
    (torch.randint(0, 2, (2, 3)), None, "floating"),
    (torch.rand(2, 3), torch.tensor([0, 1, 2]), "batch size"),
    (torch.rand(2, 3), torch.tensor([0, 5]), "out of range"),
    (torch.rand(2, 3), torch.tensor([0.0, 1.0]), "int64"),
    (torch.rand(2, 3), torch.tensor([-1, 0]), ">= 0"),
    (torch.rand(3), None, "batch"),
])
def test_bad_inputs(x, y, msg):
    with pytest.raises(AdvgeomError, match=msg):
        check_inputs(x, y, num_classes=3)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf"), "a", torch.tensor([-1.0, 0.1])])
def test_bad_eps(eps):
    with pytest.raises(AdvgeomError):
        check_eps(eps, 2)


def test_range_check_can_be_left_out_for_raw_features():
    """check_range=False (the geodesic rejector's features) accepts finite values outside
    [0,1] and still refuses everything else the contract refuses."""
    check_inputs(torch.randn(4, 3) * 5, torch.tensor([0, 1, 2, 0]), num_classes=3, check_range=False)
    with pytest.raises(AdvgeomError, match="NaN"):
        check_inputs(torch.full((2, 3), float("nan")), check_range=False)
    with pytest.raises(AdvgeomError, match="out of range"):
        check_inputs(torch.randn(2, 3) * 5, torch.tensor([0, 5]), num_classes=3, check_range=False)
    with pytest.raises(AdvgeomError, match=r"must be floating point, got dtype torch.int64"):
        check_inputs(torch.randint(0, 2, (2, 3)), check_range=False)


def test_one_line_collapses_every_whitespace_run():
    assert one_line("a\n  b\tc \r\n") == "a b c"
    assert one_line(ValueError("x\ny")) == "x y"
    assert one_line("") == ""
