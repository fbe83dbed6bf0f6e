import numpy as np
import pytest
import torch

from pla4d.colour import linear_to_srgb, linear_to_srgb8, srgb8_to_linear, srgb_to_linear


def test_reference_values() -> None:
    # Values of the IEC 61966-2-1 curve.
    assert srgb_to_linear(0.0) == 0.0
    assert srgb_to_linear(1.0) == pytest.approx(1.0, abs=1e-12)
    assert srgb_to_linear(0.5) == pytest.approx(0.21404114, abs=1e-7)
    assert srgb_to_linear(0.04045) == pytest.approx(0.04045 / 12.92, abs=1e-12)
    assert linear_to_srgb(0.18) == pytest.approx(0.46135612, abs=1e-7)
    assert linear_to_srgb(0.001) == pytest.approx(0.01292, abs=1e-12)
    assert linear_to_srgb8(0.5) == 188
    assert linear_to_srgb8(0.2158605) == 128  # 128/255 decodes to 0.2158605


def test_curve_is_continuous_at_the_knee() -> None:
    eps = 1e-9
    assert linear_to_srgb(0.0031308 - eps) == pytest.approx(linear_to_srgb(0.0031308 + eps), abs=1e-6)
    assert srgb_to_linear(0.04045 - eps) == pytest.approx(srgb_to_linear(0.04045 + eps), abs=1e-6)


@pytest.mark.parametrize("kind", ["torch32", "torch64", "numpy32", "numpy64"])
def test_round_trip_and_dtypes(kind: str) -> None:
    values = np.linspace(0.0, 1.0, 1001)
    if kind.startswith("torch"):
        x = torch.tensor(values, dtype=torch.float32 if kind == "torch32" else torch.float64)
        lin = srgb_to_linear(x)
        back = linear_to_srgb(lin)
        assert isinstance(back, torch.Tensor) and back.dtype == x.dtype
        err = (back - x).abs().max().item()
    else:
        x = values.astype(np.float32 if kind == "numpy32" else np.float64)
        lin = srgb_to_linear(x)
        back = linear_to_srgb(lin)
        assert isinstance(back, np.ndarray) and back.dtype == x.dtype
        err = float(np.abs(back - x).max())
    assert err < (2e-6 if kind.endswith("32") else 1e-12)
    # The tensor, array and scalar paths agree.
    assert float(lin[500]) == pytest.approx(srgb_to_linear(float(values[500])), rel=1e-6)


def test_monotonic_and_negatives_clamped() -> None:
    x = torch.linspace(-0.1, 1.2, 500, dtype=torch.float64)
    for f in (srgb_to_linear, linear_to_srgb):
        y = f(x)
        assert torch.all(y[1:] >= y[:-1])
        assert torch.all(y[x <= 0] == 0)
        assert torch.isfinite(y).all()


def test_gradients_are_finite_everywhere() -> None:
    x = torch.tensor([0.0, 1e-6, 0.0031308, 0.04045, 0.5, 1.0], requires_grad=True)
    (linear_to_srgb(x).sum() + srgb_to_linear(x).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_uint8_helpers() -> None:
    codes = np.arange(256, dtype=np.uint8)
    assert np.array_equal(linear_to_srgb8(srgb8_to_linear(codes)), codes)
    t = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(linear_to_srgb8(srgb8_to_linear(t)), t)
