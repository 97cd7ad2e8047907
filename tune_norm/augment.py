"""The baseline study's training augmentation (rotation, random affine, colour jitter) on whole batches of tensors."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# The baseline study's transforms.Compose, literally, run on 8-bit PIL images:
#   RandomRotation((-6, 6), fill=(1,))
#   RandomAffine(degrees=7, shear=10, translate=(0.1, 0.1), scale=(0.8, 1.2))
#   ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
# Here the images are float tensors holding the same 0..255 grey levels, and each step rounds as PIL does, so
# the batch sees what the baseline study's PIL pipeline produces (tests/test_augment.py checks both, image by image
# and in distribution). Units: degrees, fractions of the image size, multiplicative factors, grey levels.
LEVELS = 255.0  # the 8-bit grey scale the baseline study's transforms work on
ROTATION_DEG = 6.0  # RandomRotation((-6, 6))
ROTATION_FILL = 1.0  # ... fill=(1,): level 1 of 255 in the corners the rotation uncovers (not 0)
AFFINE_DEG = 7.0  # RandomAffine(degrees=7, ...), fill 0
SHEAR_DEG = 10.0  # ... shear=10 (x-shear only)
TRANSLATE_FRAC = 0.1  # ... translate=(0.1, 0.1), in whole pixels as torchvision rounds
SCALE = (0.8, 1.2)  # ... scale=(0.8, 1.2)
BRIGHTNESS = 0.4  # ColorJitter(brightness=0.4): factor in [0.6, 1.4]
CONTRAST = 0.4  # ColorJitter(contrast=0.4): factor in [0.6, 1.4]
# ColorJitter's saturation=0.4 and hue=0.1 leave a one-channel image unchanged (PIL's Color enhancer blends the
# image with itself; torchvision's adjust_hue returns grey images as they are). What they do change is nothing
# but the order: ColorJitter applies its four adjustments in a random permutation per image, so brightness
# comes before contrast with probability 1/2, and the order matters (contrast uses the image's mean).
BRIGHTNESS_FIRST_P = 0.5


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


def brightness(levels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Brightness on 8-bit levels: blend with black, truncate to a whole level, clip."""
    return (levels * factor).floor_().clamp_(0, LEVELS)


def contrast(levels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Contrast on 8-bit levels: blend with the image's mean rounded to a whole level."""
    mean = levels.mean(dim=(1, 2, 3), keepdim=True).add_(0.5).floor_()
    return (mean + factor * (levels - mean)).floor_().clamp_(0, LEVELS)


def jitter(levels: torch.Tensor, p: dict) -> torch.Tensor:
    """ColorJitter on grey images: brightness and contrast, brightness first where ``p["brightness_first"]``."""
    b, c = p["brightness"].view(-1, 1, 1, 1), p["contrast"].view(-1, 1, 1, 1)
    first = p["brightness_first"].view(-1, 1, 1, 1)
    levels = torch.where(first, brightness(levels, b), levels)
    levels = contrast(levels, c)
    return torch.where(first, levels, brightness(levels, b))


def sample_params(n: int, size: int = 28, generator: torch.Generator | None = None, device="cpu") -> dict:
    """Draw the per-image random parameters of the baseline study's transforms on ``device``, with ``generator``
    (which must live on that device: the Trainer's does)."""
    def u(lo: float, hi: float) -> torch.Tensor:
        return torch.empty(n, device=device).uniform_(lo, hi, generator=generator)

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
        "brightness_first": u(0, 1) < BRIGHTNESS_FIRST_P,
    }


def apply(levels: torch.Tensor, p: dict) -> torch.Tensor:
    """Rotation (fill level 1), then affine (fill 0), then jitter, on float [B, 1, H, W] grey levels 0..255."""
    zero = torch.zeros_like(p["rotation"])
    one = torch.ones_like(p["rotation"])
    # RandomRotation rotates counter-clockwise, so torchvision passes -angle to the affine map. Shifting by the
    # fill level before and after the zero-filled warp fills with it: exact, the levels are whole numbers.
    rotated = warp(levels - ROTATION_FILL, inverse_affine(-p["rotation"], zero, zero, one, zero)) + ROTATION_FILL
    levels = warp(rotated, inverse_affine(p["angle"], p["tx"], p["ty"], p["scale"], p["shear"]))
    return jitter(levels, p)


def augment(levels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a float batch [B, 1, 28, 28] of grey levels 0..255 with freshly drawn parameters."""
    return apply(levels, sample_params(levels.shape[0], levels.shape[-1], generator, levels.device))
