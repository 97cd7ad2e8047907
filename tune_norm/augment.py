"""The seed's augmentation (rotation, random affine, brightness/contrast jitter) on whole batches of tensors."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# The seed's transforms.Compose, in its order, with units:
ROTATION_DEG = 6.0  # RandomRotation((-6, 6)), fill 0
AFFINE_DEG = 7.0  # RandomAffine(degrees=7, ...)
SHEAR_DEG = 10.0  # ... shear=10 (x-shear only)
TRANSLATE_FRAC = 0.1  # ... translate=(0.1, 0.1), in whole pixels as torchvision rounds
SCALE = (0.8, 1.2)  # ... scale=(0.8, 1.2)
BRIGHTNESS = 0.2  # ColorJitter(brightness=0.2): factor in [0.8, 1.2]
CONTRAST = 0.2  # ColorJitter(contrast=0.2): factor in [0.8, 1.2]


def inverse_affine(angle, tx, ty, scale, shear_x, shear_y=None) -> torch.Tensor:
    """Batched [B, 2, 3] output->input pixel maps about the image centre, as torchvision's F.affine builds them.

    Angles in degrees (clockwise, torchvision's affine convention), translations in pixels.
    """
    shear_y = torch.zeros_like(shear_x) if shear_y is None else shear_y
    rot, sx, sy = (torch.deg2rad(t) for t in (angle, shear_x, shear_y))
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m = torch.stack([d, -b, -c, a], dim=-1).view(-1, 2, 2) / scale.view(-1, 1, 1)
    shift = -torch.stack([tx, ty], dim=-1).unsqueeze(-1)
    return torch.cat([m, m @ shift], dim=-1)


@functools.lru_cache(maxsize=16)
def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Pixel-centre x and y as [1, 1, H*W] and the half-size divisor [2]; built once per shape and device."""
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=device, dtype=dtype)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=device, dtype=dtype)
    half = torch.tensor([0.5 * w, 0.5 * h], device=device, dtype=dtype)
    return xs.expand(h, w).reshape(1, 1, h * w), ys.unsqueeze(1).expand(h, w).reshape(1, 1, h * w), half


def warp(images: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Resample [B, 1, H, W] through per-image inverse maps, nearest neighbour, zero fill (torchvision's way)."""
    b, _, h, w = images.shape
    x, y, half = _base_grid(h, w, images.device, images.dtype)
    m = inverse.to(images.dtype)
    # x*m0 + y*m1 + m2 elementwise: the [x, y, 1] @ m^T product summed in the same order, bit for bit,
    # and 3-5x cheaper on CPU than B tiny matmuls; laid out [B, 2, H*W] so the broadcasts stay contiguous
    grid = (x * m[:, :, 0:1] + y * m[:, :, 1:2] + m[:, :, 2:3]).transpose(1, 2) / half
    return F.grid_sample(images, grid.reshape(b, h, w, 2), mode="nearest", padding_mode="zeros", align_corners=False)


def jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """torchvision's adjust_brightness then adjust_contrast, per image factors [B]."""
    images = (images * brightness.view(-1, 1, 1, 1)).clamp_(0, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    c = contrast.view(-1, 1, 1, 1)
    return (c * images + (1 - c) * mean).clamp_(0, 1)


def sample_params(n: int, size: int = 28, generator: torch.Generator | None = None, device="cpu") -> dict:
    """Draw the per-image random parameters of the seed's transforms."""
    u = lambda lo, hi: torch.empty(n).uniform_(lo, hi, generator=generator).to(device)  # noqa: E731
    max_t = TRANSLATE_FRAC * size
    return {
        "rotation": u(-ROTATION_DEG, ROTATION_DEG),
        "angle": u(-AFFINE_DEG, AFFINE_DEG),
        "tx": u(-max_t, max_t).round(),
        "ty": u(-max_t, max_t).round(),
        "scale": u(*SCALE),
        "shear": u(-SHEAR_DEG, SHEAR_DEG),
        "brightness": u(1 - BRIGHTNESS, 1 + BRIGHTNESS),
        "contrast": u(1 - CONTRAST, 1 + CONTRAST),
    }


def apply(images: torch.Tensor, p: dict) -> torch.Tensor:
    """Rotation, then affine, then jitter, on float [B, 1, H, W] in [0, 1]."""
    zero = torch.zeros_like(p["rotation"])
    one = torch.ones_like(p["rotation"])
    # RandomRotation rotates counter-clockwise, so torchvision passes -angle to the affine map.
    images = warp(images, inverse_affine(-p["rotation"], zero, zero, one, zero))
    images = warp(images, inverse_affine(p["angle"], p["tx"], p["ty"], p["scale"], p["shear"]))
    return jitter(images, p["brightness"], p["contrast"])


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a float batch [B, 1, 28, 28] in [0, 1] with freshly drawn parameters."""
    return apply(images, sample_params(images.shape[0], images.shape[-1], generator, images.device))
