"""Natural-training objectives (defenses/standard.py, defenses/binary.py): options are
checked when the objective is built, as one-line ConfigErrors (issue 29)."""
import pytest
import torch
import torch.nn.functional as F

from advgeom.errors import ConfigError
from advgeom.registry import create


@pytest.mark.parametrize("value", [2.0, -0.1, float("nan"), float("inf"), "abc"])
def test_label_smoothing_outside_0_1_is_a_config_error(value):
    with pytest.raises(ConfigError, match="label_smoothing") as err:
        create("defense", "ce", label_smoothing=value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", [0.0, 0.1, 1.0])
def test_label_smoothing_in_range_matches_torch(value):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1])
    loss = create("defense", "ce", label_smoothing=value)(model, x, y)
    assert torch.equal(loss, F.cross_entropy(model(x), y, label_smoothing=value))


def test_bce_takes_no_options():
    with pytest.raises(ConfigError):
        create("defense", "bce", label_smoothing=0.1)
