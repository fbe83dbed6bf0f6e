"""The perceptual loss: real shipped weights, the same numbers as stlpips's own code, sane behaviour, clear errors.

These tests need the stlpips-pytorch package (a dependency of pla4d); they fail, not skip, without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import subprocess
import sys
import types

import pytest
import torch

from pla4d.losses import perceptual
from pla4d.losses.perceptual import (
    STLPIPS_SHA256,
    MissingWeightsError,
    PerceptualLoss,
    perceptual_available,
    stlpips_weights_path,
)

NETS = ("alex", "vgg")


def scenes(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(n, 3, H, W) images in [0, 1] with structure a network responds to: colour waves and hard-edged discs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    out = []
    for _ in range(n):
        freq, tilt = 1 + 3 * float(torch.rand(1, generator=g)), float(torch.rand(1, generator=g))
        img = torch.stack([0.5 + 0.3 * torch.sin(2 * math.pi * freq * (tilt * xx + yy) + c) for c in range(3)])
        for _ in range(6):
            cx, cy, r = torch.rand(3, generator=g).tolist()
            disc = (((xx - cx) ** 2 + (yy - cy) ** 2) < (0.05 + 0.2 * r) ** 2).float()
            img = img * (1 - disc) + torch.rand(3, 1, 1, generator=g) * disc
        out.append(img)
    return torch.stack(out).clamp(0, 1)


@pytest.fixture(scope="module")
def losses() -> dict[str, PerceptualLoss]:
    return {net: PerceptualLoss(net, source="stlpips") for net in NETS}


@pytest.fixture(scope="module")
def stlpips_reference():
    """stlpips's own ``LPIPS`` class, its code run as shipped.

    Its modules import torchvision, IPython and torchsummary at module level, none of which the shift-tolerant
    path uses (its trunks are built from its own ``models_lpf``), and torchvision cannot be installed here. So
    empty stand-ins sit in sys.modules while it is imported, and they and stlpips's modules are taken out again
    before any other test runs.
    """
    before = set(sys.modules)
    stubs = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.models", "IPython", "torchsummary")}
    stubs["torchvision"].models = stubs["torchvision.models"]
    stubs["IPython"].embed = lambda *args, **kwargs: None
    stubs["torchsummary"].summary = lambda *args, **kwargs: None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, module in stubs.items():
                mp.setitem(sys.modules, name, module)
            from stlpips_pytorch import stlpips

            models = {net: stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False) for net in NETS}
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("stlpips_pytorch"):
                del sys.modules[name]
    assert not {"torchvision", "IPython", "torchsummary"} & set(sys.modules)
    return models


def test_the_weights_are_the_files_stlpips_pytorch_0_0_2_ships():
    for net in NETS:
        path = stlpips_weights_path(net)
        assert path is not None, "stlpips-pytorch is not installed: pip install stlpips-pytorch==0.0.2"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == STLPIPS_SHA256[net]
        assert perceptual_available(net, "stlpips")


@pytest.mark.parametrize("net", NETS)
def test_every_tensor_of_the_file_is_loaded(net, losses):
    # Loading is strict, so every file tensor has a place; here also the values are those of the file.
    state = torch.load(stlpips_weights_path(net), map_location="cpu", weights_only=True)
    ours = losses[net].impl
    assert torch.equal(ours.net[0][0].weight, state["net.slice1.0.weight"])
    assert torch.equal(ours.lins[4].data, state["lin4.model.1.weight"])
    n_file = sum(v.numel() for k, v in state.items() if not k.endswith("filt"))
    n_ours = sum(p.numel() for p in ours.parameters()) + ours.shift.numel() + ours.scale.numel()
    assert n_ours == n_file


@pytest.mark.parametrize("net", NETS)
def test_same_values_and_gradients_as_stlpips_own_code(net, stlpips_reference):
    ref = stlpips_reference[net]
    file_state = torch.load(stlpips_weights_path(net), map_location="cpu", weights_only=True)
    ref_state = ref.state_dict()
    # stlpips loads with strict=False: make sure its model really holds the file's weights.
    assert all(torch.equal(ref_state[k], v) for k, v in file_state.items())
    ours = PerceptualLoss(net, source="stlpips")

    # Values in float32, odd sizes (the reflection padding of every blur-pool sees odd and even maps).
    x = scenes(3, 45, 58, seed=1)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    with torch.no_grad():
        expected, got = ref(x, y, normalize=True).flatten(), ours(x, y)
    assert got.shape == (3,) and float(expected.min()) > 0.01
    assert float((got - expected).abs().max()) < 1e-6, (got, expected)

    # Gradients in float64, on images with a little noise: on flat regions a max-pool window holds exact ties,
    # and which of the tied inputs gets the gradient is an implementation detail (both are valid subgradients).
    ref.double()
    ours.double()
    x = scenes(1, 33, 35, seed=3) + 0.02 * torch.randn(1, 3, 33, 35, generator=torch.Generator().manual_seed(4))
    x = x.clamp(0, 1).double()
    y = scenes(1, 33, 35, seed=5).double()
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref(xr, y, normalize=True).sum().backward()
    ours(xo, y).sum().backward()
    assert float((xo.grad - xr.grad).abs().max()) < 1e-9 * float(xr.grad.abs().max())
    ref.float()


@pytest.mark.parametrize("net", NETS)
def test_distance_behaves_like_a_perceptual_distance(net, losses):
    loss = losses[net]
    big = scenes(3, 66, 66, seed=3)
    x = big[:, :, 1:-1, 1:-1]
    shifted = big[:, :, 1:-1, 2:]  # the same scene one pixel to the left
    blurred = torch.nn.functional.avg_pool2d(big, 3, stride=1)  # a 3x3 box blur
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(loss(x, x), torch.zeros(3))  # exactly, not merely small
        by_noise = torch.stack([loss(x, (x + s * noise).clamp(0, 1)) for s in (0.01, 0.03, 0.1, 0.3)])
        shift, blur = loss(x, shifted), loss(x, blurred)
        assert torch.allclose(loss(shifted, x), shift, atol=1e-6)  # symmetric, like LPIPS
    assert bool((by_noise[1:] > by_noise[:-1]).all()), by_noise
    assert bool((by_noise[-1] > 0.4).all()), by_noise
    # Shift tolerance: a 1-pixel shift scores far below 10% noise (measured: 1-3% of it) and below a 3x3 blur.
    assert bool((shift < 0.1 * by_noise[2]).all()), (shift, by_noise[2])
    assert bool((shift < blur).all()), (shift, blur)


@pytest.mark.parametrize("net", NETS)
def test_a_random_network_gives_other_numbers(net, losses):
    x = scenes(2, 40, 40, seed=5)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6))).clamp(0, 1)
    random_net = PerceptualLoss(net, source="stlpips")
    torch.manual_seed(0)
    for p in random_net.impl.net.parameters():
        torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else torch.nn.init.zeros_(p)
    with torch.no_grad():
        real, rand = losses[net](x, y), random_net(x, y)
    assert bool(((real - rand).abs() > 0.5 * real).all()), (real, rand)


@pytest.mark.parametrize("net", NETS)
def test_frozen_eval_and_gradients_reach_only_the_input(net, losses):
    loss = losses[net]
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training and not any(m.training for m in loss.modules())
    x = scenes(2, 48, 40, seed=7).requires_grad_(True)
    y = scenes(2, 48, 40, seed=8)
    loss(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in loss.parameters())
    assert loss.name == f"LPIPS-{net} (stlpips-pytorch weights, shift-tolerant)" and loss.source == "stlpips"


def test_layer_gradient_matches_autograd_of_the_lpips_formula():
    # The hand-written value and backward of one LPIPS layer against LPIPS's formula and torch's gradcheck.
    g = torch.Generator().manual_seed(9)
    a, b = (torch.rand(2, 5, 4, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w = torch.rand(1, 5, 1, 1, generator=g, dtype=torch.float64, requires_grad=True)

    def formula(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        return torch.nn.functional.conv2d((nx - ny) ** 2, w).mean((2, 3)).flatten()

    torch.testing.assert_close(perceptual._LpipsLayer.apply(a, b, w), formula(a, b), rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(perceptual._LpipsLayer.apply, (a, b, w))
    # An exactly-zero feature vector (a pixel where every ReLU is off): a finite gradient, where the formula's
    # autograd gives NaN (sqrt's backward at 0 times 0).
    z = a.detach().clone()
    z[0, :, 1, 1] = 0.0
    z.requires_grad_(True)
    (gz,) = torch.autograd.grad(perceptual._LpipsLayer.apply(z, b, w).sum(), z)
    assert torch.isfinite(gz).all()
    (gf,) = torch.autograd.grad(formula(z, b).sum(), z)
    assert torch.isnan(gf).any()
    mask = torch.isfinite(gf)
    torch.testing.assert_close(gz[mask], gf[mask])


def test_missing_package_is_one_clear_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "stlpips_pytorch" else real_find_spec(name, *a)
    )
    assert stlpips_weights_path("alex") is None
    assert not perceptual_available("alex", "stlpips")
    with pytest.raises(MissingWeightsError) as err:
        PerceptualLoss("alex", source="stlpips")
    message = str(err.value)
    assert "stlpips-pytorch" in message and "pip install stlpips-pytorch" in message and "\n" not in message
    assert isinstance(err.value, RuntimeError)


def test_lpips_source_without_lpips_installed(monkeypatch):
    monkeypatch.setattr(perceptual, "_lpips_installed", lambda: False)
    with pytest.raises(MissingWeightsError, match="pip install lpips"):
        PerceptualLoss("vgg", source="lpips")
    assert PerceptualLoss("alex", source="auto").source == "stlpips"


class _FakeLPIPS(torch.nn.Module):
    """Stands in for ``lpips.LPIPS`` (which needs torchvision): records how it is called."""

    calls: dict = {}

    def __init__(self, net: str, version: str, verbose: bool) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.dropout = torch.nn.Dropout()
        _FakeLPIPS.calls["init"] = (net, version)

    def forward(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        _FakeLPIPS.calls["normalize"] = normalize
        return ((a - b) ** 2).mean((1, 2, 3), keepdim=True) * self.scale  # lpips returns (B, 1, 1, 1)


def test_lpips_source_wraps_the_lpips_package(monkeypatch):
    fake = types.ModuleType("lpips")
    fake.LPIPS = _FakeLPIPS
    fake.__version__ = "0.1.4"
    monkeypatch.setitem(sys.modules, "lpips", fake)
    monkeypatch.setattr(perceptual, "_lpips_installed", lambda: True)
    loss = PerceptualLoss("vgg", source="auto")
    assert loss.source == "lpips" and _FakeLPIPS.calls["init"] == ("vgg", "0.1")
    assert loss.name == "LPIPS-vgg (lpips 0.1.4 weights, torchvision ImageNet backbone)"
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    d = loss(x, torch.zeros(2, 3, 32, 32))
    assert d.shape == (2,) and _FakeLPIPS.calls["normalize"] is True
    d.sum().backward()
    assert x.grad is not None


def test_lpips_without_its_backbone_falls_back_under_auto(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    fake = types.ModuleType("lpips")
    fake.LPIPS = no_network
    monkeypatch.setitem(sys.modules, "lpips", fake)
    monkeypatch.setattr(perceptual, "_lpips_installed", lambda: True)
    with pytest.raises(MissingWeightsError, match="backbone"):
        PerceptualLoss("alex", source="lpips")
    with pytest.warns(UserWarning, match="stlpips-pytorch weights instead"):
        loss = PerceptualLoss("alex", source="auto")
    assert loss.source == "stlpips"


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="net"):
        PerceptualLoss("squeeze")
    with pytest.raises(ValueError, match="source"):
        PerceptualLoss("alex", source="hub")
    loss = PerceptualLoss("alex", source="stlpips")
    with pytest.raises(ValueError, match="one shape"):
        loss(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 48))
    with pytest.raises(ValueError, match="at least 32"):
        loss(torch.rand(1, 3, 16, 64), torch.rand(1, 3, 16, 64))
    # Doubles in, the module's float32 out; 32 px is enough.
    assert loss(torch.rand(1, 3, 32, 32, dtype=torch.float64), torch.rand(1, 3, 32, 32)).dtype == torch.float32


def test_the_pure_torch_path_imports_neither_torchvision_nor_stlpips():
    code = (
        "import sys, torch\n"
        "from pla4d.losses.perceptual import PerceptualLoss\n"
        "PerceptualLoss('alex', 'stlpips')(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torchvision', 'stlpips_pytorch', 'IPython', 'lpips')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
