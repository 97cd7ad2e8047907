"""The batched augmentation equals torchvision's per-image transforms on the same parameters."""

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from tune_norm import augment, data


def torchvision_reference(images, p):
    """The seed's transforms, image by image, through torchvision's functional API."""
    out = []
    for i, im in enumerate(images):
        im = TF.rotate(im, p["rotation"][i].item(), interpolation=InterpolationMode.NEAREST, fill=[0.0])
        im = TF.affine(im, angle=p["angle"][i].item(), translate=[int(p["tx"][i]), int(p["ty"][i])],
                       scale=p["scale"][i].item(), shear=[p["shear"][i].item(), 0.0],
                       interpolation=InterpolationMode.NEAREST, fill=[0.0])
        im = TF.adjust_brightness(im, p["brightness"][i].item())
        out.append(TF.adjust_contrast(im, p["contrast"][i].item()))
    return torch.stack(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_matches_torchvision_per_image(data_root, seed):
    images = data.load(data_root).train.images[:48].unsqueeze(1).float() / 255
    params = augment.sample_params(48, generator=torch.Generator().manual_seed(seed))
    ours = augment.apply(images, params)
    ref = torchvision_reference(images, params)
    assert (ours - ref).abs().max().item() < 1e-5
    assert not torch.equal(ours, images)  # it did transform


def test_parameters_stay_in_the_seed_ranges():
    p = augment.sample_params(5000, generator=torch.Generator().manual_seed(0))
    assert p["rotation"].abs().max() <= 6 and p["angle"].abs().max() <= 7 and p["shear"].abs().max() <= 10
    assert p["tx"].abs().max() <= 3 and torch.equal(p["tx"], p["tx"].round())
    assert 0.8 <= p["scale"].min() and p["scale"].max() <= 1.2
    assert 0.8 <= p["brightness"].min() and p["contrast"].max() <= 1.2


def test_identity_parameters_leave_images_unchanged(data_root):
    images = data.load(data_root).test.images[:8].unsqueeze(1).float() / 255
    zero, one = torch.zeros(8), torch.ones(8)
    p = dict(rotation=zero, angle=zero, tx=zero, ty=zero, scale=one, shear=zero, brightness=one, contrast=one)
    assert torch.equal(augment.apply(images, p), images)
