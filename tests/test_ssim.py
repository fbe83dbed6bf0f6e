"""SSIM against scikit-image's structural_similarity with the Wang et al. settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from pla4d.metrics import mask_iou, psnr, ssim, ssim_tensor


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    return structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range
    )


def pair(shape: tuple[int, ...], noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = shape[-3], shape[-2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    smooth = 0.5 + 0.4 * np.sin(6 * xx + 3 * yy)[..., None] * np.linspace(0.5, 1.0, shape[-1])
    a = np.clip(np.broadcast_to(smooth, shape) + 0.1 * rng.standard_normal(shape), 0, 1)
    return a, np.clip(a + noise * rng.standard_normal(shape), 0, 1)


@pytest.mark.parametrize("shape", [(11, 11, 3), (32, 47, 3), (64, 64, 3), (20, 13, 1)])
@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_matches_skimage(shape, noise):
    a, b = pair(shape, noise, seed=shape[0] + shape[1])
    assert abs(ssim(a, b) - skimage_ssim(a, b)) < 1e-12  # float64 both: the same computation, to rounding


def test_data_range_and_torch_inputs():
    a, b = pair((40, 40, 3), 0.1, seed=1)
    assert abs(ssim(255 * a, 255 * b, data_range=255.0) - skimage_ssim(255 * a, 255 * b, 255.0)) < 1e-12
    ta, tb = torch.from_numpy(a).float(), torch.from_numpy(b).float()
    assert abs(ssim(ta, tb) - skimage_ssim(a, b)) < 1e-6


def test_batches_average_the_images():
    pairs = [pair((30, 36, 3), n, seed=i) for i, n in enumerate((0.01, 0.1, 0.3))]
    a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    each = [skimage_ssim(x, y) for x, y in pairs]
    assert abs(ssim(a, b) - float(np.mean(each))) < 1e-12
    per_image = ssim_tensor(torch.from_numpy(a), torch.from_numpy(b))
    assert per_image.shape == (3,)
    np.testing.assert_allclose(per_image.numpy(), each, atol=1e-12)
    assert each[0] > each[1] > each[2]


def test_identical_is_one_and_the_tensor_version_is_differentiable():
    a, b = pair((24, 24, 3), 0.1, seed=2)
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    x = torch.tensor(b, requires_grad=True)
    value = ssim_tensor(x, torch.from_numpy(a))
    assert value.ndim == 0
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    torch.autograd.gradcheck(
        lambda t: ssim_tensor(t, torch.from_numpy(a[:12, :12])), (x[:12, :12].detach().requires_grad_(True),)
    )
    # Gradient ascent on SSIM moves the image towards the reference.
    step = x.detach() + 0.5 * x.grad
    assert ssim(step, a) > ssim(b, a)


def test_bad_inputs():
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((16, 16, 3)), np.zeros((16, 17, 3)))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 16, 3)), np.zeros((10, 16, 3)))
    with pytest.raises(ValueError, match=r"\(H, W, C\)"):
        ssim(np.zeros((16, 16)), np.zeros((16, 16)))


def test_existing_metrics_still_work():
    a = np.zeros((4, 4, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert mask_iou(a[..., 0] + 1, a[..., 0] + 1) == 1.0
