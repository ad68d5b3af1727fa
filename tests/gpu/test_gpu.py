"""GPU-only checks (issue 27): device placement, an attack's output against its CPU
output, AMP and channels_last. Skipped without CUDA; ``benchmarks/gpu_smoke.py`` runs them
on a GPU machine (``pytest -m gpu tests/gpu``)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advgeom.attacks.fgsm import fgsm
from advgeom.attacks.pgd import pgd
from advgeom.eval.runner import evaluate
from advgeom.train import TrainConfig
from advgeom.train.loop import fit

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
EPS = 0.1


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 off, so that a GPU result can be compared with the CPU's in fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 10)).eval()


def batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_attack_stays_on_the_model_device():
    model, (x, y) = small_cnn().cuda(), batch()
    adv = pgd(model, x.cuda(), y.cuda(), eps=EPS, steps=3)
    assert adv.device.type == "cuda" and adv.shape == x.shape
    assert float((adv.cpu() - x).abs().max()) <= EPS + 1e-6


def test_attack_on_gpu_matches_cpu():
    """FGSM exactly (up to sign flips where the gradient is ~0), PGD without a random start
    on all but a few coordinates."""
    model, (x, y) = small_cnn(), batch()
    for attack, kw in ((fgsm, {}), (pgd, {"steps": 5, "random_start": False, "early_stop": False})):
        cpu = attack(model, x, y, eps=EPS, **kw)
        gpu = attack(model.cuda(), x.cuda(), y.cuda(), eps=EPS, **kw).cpu()
        model.cpu()
        differ = (cpu - gpu).abs() > 1e-4
        assert float(differ.double().mean()) < 0.01, attack.__name__
        assert float((cpu - gpu).abs().max()) <= 2 * EPS + 1e-6


def test_evaluate_moves_cpu_data_to_the_model_and_agrees_with_cpu():
    model, (x, y) = small_cnn(), batch()
    cpu = evaluate(model, (x, y), ["fgsm"], [EPS], progress=False, checks=False)
    gpu = evaluate(model.cuda(), (x, y), ["fgsm"], [EPS], progress=False, checks=False)
    assert gpu.accuracy("none") == cpu.accuracy("none")
    assert abs(gpu.accuracy("fgsm", EPS) - cpu.accuracy("fgsm", EPS)) <= 100 * 2 / len(y)


def test_amp_evaluation_close_to_fp32():
    model, (x, y) = small_cnn().cuda(), batch(256)
    full = evaluate(model, (x, y), ["fgsm"], [EPS], progress=False, checks=False)
    amp = evaluate(model, (x, y), ["fgsm"], [EPS], progress=False, checks=False, amp=True)
    assert abs(amp.accuracy("none") - full.accuracy("none")) <= 2.0


def test_channels_last_forward_matches():
    model, (x, _) = small_cnn().cuda(), batch()
    x = x.cuda()
    with torch.no_grad():
        plain = model(x)
        last = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"channels_last": True}])
def test_training_steps_on_gpu(tmp_path, options):
    cfg = TrainConfig(dataset="mnist", model="hyper_mnist_cnn", objective="pgd_at",
                      objective_kwargs={"eps": 0.3, "attack": "pgd:steps=2,step_size=0.1"},
                      batch_size=32, iterations=2, checkpoint_every=2, **options)
    res = fit(cfg, root=tmp_path, device="cuda", progress=False)
    assert next(res.model.parameters()).device.type == "cuda"
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_geodesic_rejector_fits_and_calibrates_a_gpu_model_from_cpu_data():
    """The rejector's statistics live on its model's device; fit and calibrate take CPU
    data (hyper-mnist's cpu profile on CUDA once failed here) and agree with the CPU."""
    from advgeom.inference import GeodesicRejector
    from advgeom.registry import create

    torch.manual_seed(0)
    cpu_model = create("model", "dsphere_mnist").eval()
    gpu_model = create("model", "dsphere_mnist").eval()
    gpu_model.load_state_dict(cpu_model.state_dict())
    gpu_model = gpu_model.cuda()
    x, y = batch(128)
    on_cpu = GeodesicRejector.fit(cpu_model, x, y)
    on_gpu = GeodesicRejector.fit(gpu_model, x, y)
    assert on_gpu.mean.device.type == "cuda" and on_gpu.p_factor.device.type == "cuda"
    torch.testing.assert_close(on_gpu.mean.cpu(), on_cpu.mean, rtol=1e-4, atol=1e-5)
    p_cpu, p_gpu = on_cpu.calibrate(x, 0.1), on_gpu.calibrate(x, 0.1)
    assert abs(p_cpu - p_gpu) <= 1e-4 * p_cpu
    _, accept = on_gpu.predict_with_rejection(x.cuda())
    assert accept.device.type == "cuda" and 0.8 <= float(accept.float().mean()) <= 0.95
