"""Perceptual loss: LPIPS (Zhang et al. 2018) with an AlexNet or VGG16 trunk, the way PLA4D uses it.

LPIPS: run both images through a frozen convolutional network, unit-normalise each of five feature maps along
channels, square the difference, weight the channels with learned non-negative linear weights, average over
space and sum over the five layers.

Two sources of weights:

* ``"stlpips"`` (pure torch, the CPU path): the weights that ship inside the ``stlpips-pytorch`` wheel
  (Ghildyal & Liu, "Shift-tolerant Perceptual Similarity Metric", ECCV 2022, BSD-2). That wheel holds the
  *whole* network, trunk and linear layers, for AlexNet and VGG16, so nothing is downloaded at run time. Its
  authors trained trunk and linear layers together from scratch on LPIPS's BAPPS human judgements (their
  README's ``train.py --from_scratch --train_trunk``; LPIPS's "scratch" setting), so the formula and layer
  shapes are LPIPS's but the trunk weights are not the ImageNet ones of ``lpips``. Those networks are the
  shift-tolerant variant, and the architecture below is written out layer by layer to match it exactly
  (checked against stlpips's own code in ``tests/test_perceptual.py``):

  - every stride-2 step is split into a stride-1 op followed by an anti-aliasing blur-pool (Zhang 2019): a
    3x3 binomial filter ``[1, 2, 1] x [1, 2, 1] / 16``, per channel, stride 2, after reflection padding of 2
    pixels on each side (``pad_more``);
  - AlexNet: conv1 (11x11, padding 2) runs at stride 1 and is followed by the blur-pool *before* its ReLU; the
    3x3 stride-2 max-pools before conv2 and conv3 become 3x3 stride-1 max-pools + blur-pool (the last one lies
    past relu5, so LPIPS never runs it);
  - VGG16: the 2x2 stride-2 max-pools become 2x2 stride-1 max-pools + blur-pool;
  - the tapped layers are the usual LPIPS ones (AlexNet relu1..relu5, VGG relu1_2, relu2_2, relu3_3,
    relu4_3, relu5_3) and the input scaling is LPIPS v0.1's.

  The wheel's Python code imports torchvision, IPython and torchsummary at module level, so pla4d never
  imports it: it only finds the package's folder with ``importlib.util.find_spec`` and loads the ``.pth``
  files with ``torch.load(weights_only=True)``.
* ``"lpips"`` (needs torchvision; GPU installs): ``lpips.LPIPS(net=...)`` from the ``lpips`` package as it is,
  i.e. the original (not shift-tolerant) LPIPS v0.1 with torchvision's ImageNet backbone, which torchvision
  downloads once into the torch hub cache.

``"auto"`` takes ``"lpips"`` when both ``lpips`` and ``torchvision`` are installed and its backbone can be
had, and ``"stlpips"`` otherwise. ``PerceptualLoss.name`` says which one runs, for benchmark reports.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pla4d.errors import MissingWeightsError

__all__ = [
    "NETS",
    "SOURCES",
    "STLPIPS_INSTALL",
    "STLPIPS_SHA256",
    "MissingWeightsError",
    "PerceptualLoss",
    "perceptual_available",
    "stlpips_weights_path",
]

NETS = ("alex", "vgg")
SOURCES = ("auto", "lpips", "stlpips")

STLPIPS_PACKAGE = "stlpips_pytorch"
STLPIPS_INSTALL = "pip install stlpips-pytorch==0.0.2"
LPIPS_INSTALL = "pip install lpips (with a torchvision build that matches your torch)"
# SHA-256 of the files in stlpips-pytorch 0.0.2 (weights/vST0.0/<net>_shift_tolerant.pth); the tests check them,
# the loader does not (hashing 59 MB on every construction buys nothing that a strict state-dict load misses).
STLPIPS_SHA256 = {
    "alex": "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee",
    "vgg": "44597da68f49c1837c100ff52299050f274d102eb102e5837178c79be6f0e250",
}
# torchvision's ImageNet checkpoints that lpips.LPIPS(pretrained backbone) asks for.
_TORCHVISION_CHECKPOINTS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

# LPIPS v0.1 input scaling: inputs in [-1, 1] are shifted and scaled per channel (ImageNet statistics).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# Smallest side the shift-tolerant trunks accept: reflection padding needs every map to be > 2 pixels.
_MIN_SIDE = {"alex": 32, "vgg": 32}


def _check_choice(net: str, source: str) -> None:
    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


def stlpips_weights_path(net: str) -> Path | None:
    """The ``.pth`` file of ``net`` inside the installed stlpips-pytorch package, or None when it is missing.

    Found through the import system's spec without importing the package (its modules import torchvision).
    """
    _check_choice(net, "stlpips")
    spec = importlib.util.find_spec(STLPIPS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
        if path.is_file():
            return path
    return None


def _lpips_installed() -> bool:
    return importlib.util.find_spec("lpips") is not None and importlib.util.find_spec("torchvision") is not None


def _torchvision_backbone_cached(net: str) -> bool:
    # Where torchvision's load_state_dict_from_url keeps downloads (torch.hub.get_dir honours $TORCH_HOME).
    return (Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_CHECKPOINTS[net]).is_file()


def perceptual_available(net: str = "alex", source: str = "auto") -> bool:
    """Whether ``PerceptualLoss(net, source)`` can be built on this machine without the network.

    For ``"lpips"`` that means: lpips and torchvision installed and torchvision's backbone checkpoint already in
    the torch hub cache.
    """
    _check_choice(net, source)
    stlpips_ok = stlpips_weights_path(net) is not None
    lpips_ok = _lpips_installed() and _torchvision_backbone_cached(net)
    return {"stlpips": stlpips_ok, "lpips": lpips_ok, "auto": stlpips_ok or lpips_ok}[source]


class _BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: reflection pad 2, per-channel 3x3 binomial filter, stride 2.

    The filter is a buffer named ``filt`` because the stlpips state dict carries it under that name; it is the
    fixed binomial either way.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        self.register_buffer("filt", (filt / filt.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


def _conv_then_blur_pool(x: Tensor, conv: nn.Conv2d, blur: _BlurPool) -> Tensor:
    """``blur(conv(x))`` for a stride-1 conv followed by the stride-2 blur-pool, with nothing between them.

    Both are linear, so away from the borders they are one stride-2 convolution whose kernel is the conv's
    kernel blurred (AlexNet's conv1: 13x13 at stride 2 instead of 11x11 at stride 1 and a blur, about half the
    time forward and back on CPU). The blur-pool pads the conv's *output* by reflection, which one convolution of
    the input cannot reproduce, so the first and last output rows and columns are taken from ``blur(conv(.))``
    run the direct way on a thin strip at each border. Same numbers as ``blur(conv(x))`` up to float rounding.
    """
    weight, bias = conv.weight, conv.bias
    pad, kernel = conv.padding[0], weight.shape[-1]
    filt = blur.filt[0, 0]  # (3, 3)
    merged = weight.new_zeros(*weight.shape[:2], kernel + 2, kernel + 2)
    for k in range(3):
        for j in range(3):
            merged[..., k : k + kernel, j : j + kernel] += filt[k, j] * weight
    # The blur's taps sum to 1, so the bias passes through it unchanged.
    out = F.conv2d(F.pad(x, (pad + 2,) * 4), merged.contiguous(memory_format=torch.channels_last), bias, stride=2)
    padded = F.pad(x, (pad,) * 4)
    height, width = padded.shape[-2] - kernel + 1, padded.shape[-1] - kernel + 1
    # A strip of 5 conv rows reflects at its border as the whole map does; the far strips start on an even row
    # (column) so that their stride-2 outputs fall on the whole map's.
    strip = 5 + kernel - 1
    last_row, last_col = (height - 5) // 2 * 2, (width - 5) // 2 * 2
    out = out.clone()
    out[..., :1, :] = blur(F.conv2d(padded[..., :strip, :], weight, bias))[..., :1, :]
    out[..., -1:, :] = blur(F.conv2d(padded[..., last_row:, :], weight, bias))[..., -1:, :]
    out[..., :, :1] = blur(F.conv2d(padded[..., :, :strip], weight, bias))[..., :, :1]
    out[..., :, -1:] = blur(F.conv2d(padded[..., :, last_col:], weight, bias))[..., :, -1:]
    return out


def _slice(layers: dict[int, nn.Module]) -> nn.Sequential:
    # Keep stlpips's layer indices as module names so that its state dict loads with strict=True.
    return nn.Sequential(OrderedDict((str(i), m) for i, m in layers.items()))


def _conv(cin: int, cout: int, k: int, padding: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=1, padding=padding)


def _relu() -> nn.ReLU:
    # In place is safe: nothing downstream of a ReLU needs its input for the backward pass.
    return nn.ReLU(inplace=True)


def _alexnet_shift_tolerant() -> nn.ModuleList:
    """AlexNet features, shift-tolerant: five slices ending at relu1..relu5."""
    return nn.ModuleList(
        [
            _slice({0: _conv(3, 64, 11, 2), 1: _BlurPool(64), 2: _relu()}),
            _slice({3: nn.MaxPool2d(3, stride=1), 4: _BlurPool(64), 5: _conv(64, 192, 5, 2), 6: _relu()}),
            _slice({7: nn.MaxPool2d(3, stride=1), 8: _BlurPool(192), 9: _conv(192, 384, 3, 1), 10: _relu()}),
            _slice({11: _conv(384, 256, 3, 1), 12: _relu()}),
            _slice({13: _conv(256, 256, 3, 1), 14: _relu()}),
        ]
    )


def _vgg16_shift_tolerant() -> nn.ModuleList:
    """VGG16 features (configuration D), shift-tolerant: five slices ending at relu1_2 .. relu5_3."""
    slices = []
    index, cin = 0, 3
    for block, (cout, n_convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        layers: dict[int, nn.Module] = {}
        if block > 0:  # the pool that closed the previous block opens this slice, as in torchvision's slicing
            layers[index] = nn.MaxPool2d(2, stride=1)
            layers[index + 1] = _BlurPool(cin)
            index += 2
        for _ in range(n_convs):
            layers[index] = _conv(cin, cout, 3, 1)
            layers[index + 1] = _relu()
            index += 2
            cin = cout
        slices.append(_slice(layers))
    return nn.ModuleList(slices)


_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


_EPS = 1e-10  # LPIPS's normalize_tensor adds it to the channel norm (not inside the square root)


class _LpipsLayer(torch.autograd.Function):
    """One LPIPS layer term, ``sum_c w_c mean_hw (a/(|a|+eps) - b/(|b|+eps))^2`` with ``|.|`` the norm over channels.

    Same value as the autograd composition of LPIPS's ops, with a hand-written backward: the composition makes
    about a dozen passes over each full-resolution feature map and this makes half as many, which is a third of
    VGG's time at 256 px on CPU. It also gives a zero (rather than NaN) gradient where a feature vector is exactly
    zero, where the composition's sqrt backward multiplies 0 by inf.
    """

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, w: Tensor) -> Tensor:
        na = torch.linalg.vector_norm(a, dim=1, keepdim=True)
        nb = torch.linalg.vector_norm(b, dim=1, keepdim=True)
        ia, ib = 1.0 / (na + _EPS), 1.0 / (nb + _EPS)
        # Not addcmul: its fused multiply-add would leave ~1e-16 for identical inputs instead of exactly 0.
        d = (a * ia).sub_(b * ib)
        hw = a.shape[2] * a.shape[3]
        sq = torch.linalg.vector_norm(d, dim=(2, 3)).square_()  # (B, C) sums over space of d^2
        ctx.save_for_backward(a, b, d, na, nb, ia, ib, w, sq)
        ctx.hw = hw
        return sq @ w.reshape(-1) / hw

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        a, b, d, na, nb, ia, ib, w, sq = ctx.saved_tensors
        batch, channels = sq.shape
        g_u = d * (grad[:, None] * w.reshape(1, -1) * (2.0 / ctx.hw)).view(batch, channels, 1, 1)

        def through_norm(g: Tensor, x: Tensor, n: Tensor, inv: Tensor) -> Tensor:
            # u = x / (|x| + eps): du/dx^T g = g / (|x| + eps) - x <g, x> / ((|x| + eps)^2 |x|); where |x| = 0,
            # x = 0 too and the second term is 0 (clamping n keeps it from being 0 * inf).
            k = (g * x).sum(dim=1, keepdim=True) * inv.square() / n.clamp_min(1e-30)
            return (g * inv).addcmul_(x, k, value=-1.0)

        ga = through_norm(g_u, a, na, ia) if ctx.needs_input_grad[0] else None
        gb = through_norm(-g_u, b, nb, ib) if ctx.needs_input_grad[1] else None
        gw = (grad @ sq / ctx.hw).view_as(w) if ctx.needs_input_grad[2] else None
        return ga, gb, gw


class _StLpips(nn.Module):
    """LPIPS v0.1 over the shift-tolerant trunk, weights from stlpips-pytorch."""

    def __init__(self, net: str) -> None:
        super().__init__()
        path = stlpips_weights_path(net)
        if path is None:
            raise MissingWeightsError(
                f"LPIPS-{net} weights not found: the perceptual loss loads them from the package "
                f"stlpips-pytorch, which is not installed. Install it with: {STLPIPS_INSTALL}"
            )
        self.net_name = net
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.net = _alexnet_shift_tolerant() if net == "alex" else _vgg16_shift_tolerant()
        # The 1x1 "NetLinLayer" convs, kept as (1, C, 1, 1) weights.
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in _CHANNELS[net]])
        self._load(path)
        self.to(memory_format=torch.channels_last)

    def _load(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a truncated or foreign file: say which one
            raise MissingWeightsError(f"cannot read LPIPS weights {path}: {exc}. Reinstall: {STLPIPS_INSTALL}") from exc
        mapped: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("net.slice"):
                # stlpips "net.sliceK.I.weight" -> ours "net.{K-1}.I.weight"
                head, rest = key[len("net.slice") :].split(".", 1)
                mapped[f"net.{int(head) - 1}.{rest}"] = value
            elif key.startswith("lin"):
                mapped[f"lins.{int(key[3])}"] = value  # "linK.model.1.weight" (dropout is model.0)
            elif key.startswith("scaling_layer."):
                mapped[key.split(".", 1)[1]] = value
            else:
                mapped[key] = value  # unknown key: strict loading below reports it
        # strict: every tensor of the file lands in a layer of this architecture and vice versa (stlpips itself
        # loads with strict=False, which would hide a mismatch).
        self.load_state_dict(mapped, strict=True)

    def features(self, x: Tensor) -> list[Tensor]:
        # channels_last: oneDNN's convolutions and the stride-1 max-pools run about 1.5x faster in it on CPU.
        h = ((2.0 * x - 1.0 - self.shift) / self.scale).contiguous(memory_format=torch.channels_last)
        feats = []
        for i, part in enumerate(self.net):
            if i == 0 and self.net_name == "alex":
                h = part[2](_conv_then_blur_pool(h, part[0], part[1]))
            else:
                h = part(h)
            feats.append(h)
        return feats

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        # Two passes rather than one concatenated batch: the target usually needs no gradient, and a separate
        # pass keeps autograd from recording (and later back-propagating through) its half.
        fx, fy = self.features(x), self.features(y)
        total = x.new_zeros(x.shape[0])
        for a, b, w in zip(fx, fy, self.lins, strict=True):
            # The 1x1 conv commutes with the spatial mean, so it is applied to the (B, C) means.
            total = total + _LpipsLayer.apply(a, b, w)
        return total


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "?"


class _LpipsPackage(nn.Module):
    """``lpips.LPIPS`` from the lpips package (original LPIPS v0.1 with torchvision's backbone)."""

    def __init__(self, net: str) -> None:
        super().__init__()
        if not _lpips_installed():
            raise MissingWeightsError(
                f"source='lpips' needs the packages lpips and torchvision, which are not installed: {LPIPS_INSTALL}; "
                f"or use source='stlpips' ({STLPIPS_INSTALL})"
            )
        lpips: Any = importlib.import_module("lpips")
        try:
            self.model = lpips.LPIPS(net=net, version="0.1", verbose=False)
        except OSError as exc:  # urllib's URLError is an OSError: torchvision could not download the backbone
            raise MissingWeightsError(
                f"lpips could not get torchvision's ImageNet {net} backbone ({exc}); it downloads it once into the "
                f"torch hub cache, so run once with network access, or use source='stlpips' ({STLPIPS_INSTALL})"
            ) from exc
        self.version = getattr(lpips, "__version__", None) or _distribution_version("lpips")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x, y, normalize=True).reshape(x.shape[0])


class PerceptualLoss(nn.Module):
    """LPIPS distance between two batches of images, differentiable in both, with a frozen network.

    ``net``: ``"alex"`` (fast) or ``"vgg"`` (the paper's). ``source``: ``"stlpips"`` (pure torch, weights from
    the stlpips-pytorch package, shift-tolerant trunk), ``"lpips"`` (the lpips package; needs torchvision) or
    ``"auto"`` (lpips when it and torchvision are installed and its backbone can be had, stlpips otherwise).
    Raises ``MissingWeightsError`` when the chosen weights are not installed.

    ``forward(x, y)``: ``x``, ``y`` (B, 3, H, W) display sRGB in [0, 1], H and W at least 32; returns (B,)
    distances (0 for identical images). Move it with ``.to(device)``; inputs are cast to its dtype.
    """

    name: str

    def __init__(self, net: str = "alex", source: str = "auto") -> None:
        super().__init__()
        _check_choice(net, source)
        self.net_name = net
        impl: nn.Module | None = None
        if source == "lpips" or (source == "auto" and _lpips_installed()):
            try:
                impl = _LpipsPackage(net)
                self.source = "lpips"
                self.name = f"LPIPS-{net} (lpips {impl.version} weights, torchvision ImageNet backbone)"
            except MissingWeightsError as exc:
                if source == "lpips":
                    raise
                warnings.warn(f"{exc}; using the stlpips-pytorch weights instead", stacklevel=2)
        if impl is None:
            impl = _StLpips(net)
            self.source = "stlpips"
            self.name = f"LPIPS-{net} (stlpips-pytorch weights, shift-tolerant)"
        self.impl = impl
        # A loss network is never trained: freeze it, and eval() switches off lpips's dropout.
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        # Stay in eval mode whatever an enclosing model.train() asks: dropout in the loss would make it noisy.
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(
                f"PerceptualLoss needs two (B, 3, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[2:]) < _MIN_SIDE[self.net_name]:
            raise ValueError(
                f"PerceptualLoss needs images of at least {_MIN_SIDE[self.net_name]} pixels a side, "
                f"got {tuple(x.shape[2:])}"
            )
        dtype = next(self.impl.parameters()).dtype
        return self.impl(x.to(dtype), y.to(dtype))


def make_perceptual(weight: float, net: str, device: torch.device) -> tuple[PerceptualLoss | None, str]:
    """A stage's LPIPS network (real weights), or (None, 'off') when its weight is 0."""
    if weight == 0:
        return None, "off"
    loss = PerceptualLoss(net=net).to(device)
    return loss, loss.name
