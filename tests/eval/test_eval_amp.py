"""``evaluate(..., amp=True)``: attacks' forward passes under bf16 autocast."""
import torch

from advgeom.eval.runner import evaluate
from advgeom.results import ResultStore


def test_amp_attacks_stay_in_the_threat_model_and_are_stored_apart(tmp_path):
    """Adversarials stay inside the ball; the units are keyed apart from float32 ones
    (the clean unit is shared), and the float32 scoring gives a real robust accuracy."""
    model = torch.nn.Linear(2, 2).eval()   # class 0 where x0 > x1: points near the diagonal flip
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        model.bias.zero_()
    x = torch.rand(40, 2, generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    store = ResultStore(tmp_path / "r.sqlite")
    full = evaluate(model, (x, y), "pgd:steps=10", "0.3", store=store, progress=False, checks=False)
    half = evaluate(model, (x, y), "pgd:steps=10", "0.3", store=store, progress=False, checks=False,
                    amp=True)
    assert (half.units_run, half.units_skipped) == (1, 1)
    row = next(r for r in half.rows if r.attack.startswith("pgd") and r.metric == "robust_accuracy")
    assert row.extra["max_norm"] <= 0.3 + 1e-6
    ref = next(r for r in full.rows if r.attack.startswith("pgd") and r.metric == "robust_accuracy")
    assert abs(row.value - ref.value) <= 10.0   # the same attack, bf16 forwards: close, not equal
    assert row.value < 100.0
