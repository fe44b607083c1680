from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from convision.data import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SyntheticSegmentation,
    pad_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from convision.data.transforms import RandomScale

# class k is painted with colour PALETTE[k]; after any joint transform the colour must still tell the class
PALETTE = torch.tensor(
    [[0, 0, 0], [250, 0, 0], [0, 250, 0], [0, 0, 250], [250, 250, 0]],
    dtype=torch.float32,
)


def _colour_coded(h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 5, (h // 8, w // 8), generator=g)
    mask = coarse.repeat_interleave(8, 0).repeat_interleave(
        8, 1
    )  # blocks: interiors survive resizing
    image = PALETTE[mask].permute(2, 0, 1).to(torch.uint8)
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def _decode(image_norm):
    """Undo normalisation and find the palette colour nearest to each pixel."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image_norm * std + mean) * 255  # [3,H,W]
    d = ((rgb.permute(1, 2, 0)[:, :, None, :] - PALETTE[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def test_train_transforms_keep_image_and_mask_aligned():
    t = segmentation_train_transforms(
        crop_size=32, scale_range=(0.5, 2.0), hflip=True, color_jitter=0.0
    )
    torch.manual_seed(0)
    for seed in range(12):
        image, mask = _colour_coded(seed=seed)
        out_img, out_mask = t(image, mask)
        assert out_img.dtype == torch.float32 and out_img.shape == (3, 32, 32)
        assert out_mask.dtype == torch.int64 and out_mask.shape == (32, 32)
        assert set(out_mask.unique().tolist()) <= {
            0,
            1,
            2,
            3,
            4,
            IGNORE_INDEX,
        }  # nearest: no new labels
        valid = out_mask != IGNORE_INDEX
        decoded = _decode(out_img)
        agree = (decoded[valid] == out_mask[valid]).float().mean().item()
        assert agree > 0.97, agree  # only bilinear-blended block borders may differ


def test_flip_and_scale_move_image_and_mask_together():
    # an asymmetric pattern: the left half is class 1 -> flip must move both
    mask = torch.zeros(16, 16, dtype=torch.int64)
    mask[:, :8] = 1
    image = PALETTE[mask].permute(2, 0, 1).to(torch.uint8)
    t = segmentation_train_transforms(
        crop_size=16, scale_range=(1.0, 1.0), hflip=True, color_jitter=0.0
    )
    seen = set()
    torch.manual_seed(1)
    for _ in range(20):
        img, m = t(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert torch.equal(_decode(img), m)
        seen.add(int(m[0, 0]))
    assert seen == {0, 1}  # flipped and not flipped both happened


def test_padding_fills_mask_with_ignore_and_image_with_zero():
    image = tv_tensors.Image(torch.full((3, 10, 12), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(10, 12, dtype=torch.int64))
    t = segmentation_train_transforms(
        crop_size=(20, 24),
        scale_range=(1.0, 1.0),
        hflip=False,
        color_jitter=0.0,
        mean=(0, 0, 0),
        std=(1, 1, 1),
    )
    img, m = t(image, mask)
    assert m.shape == (20, 24)
    assert (m == IGNORE_INDEX).sum() == 20 * 24 - 10 * 12 and (m == 1).sum() == 10 * 12
    assert torch.all(img[:, m == IGNORE_INDEX] == 0)
    assert torch.allclose(img[:, m == 1], torch.tensor(200 / 255))


def test_random_scale_range_and_nearest_mask():
    torch.manual_seed(0)
    image, mask = _colour_coded(40, 56)
    sizes = set()
    for _ in range(20):
        img, m = RandomScale((0.5, 2.0))(image, mask)
        assert img.shape[-2:] == m.shape
        h = img.shape[-2]
        assert 20 <= h <= 80 and abs(img.shape[-1] / h - 56 / 40) < 0.1
        assert set(m.unique().tolist()) <= set(mask.unique().tolist())
        sizes.add(h)
    assert len(sizes) > 5


def test_colour_jitter_changes_image_only():
    ds = SyntheticSegmentation("train", num_images=1, image_size=32)
    image, mask = ds[0]
    t = segmentation_train_transforms(
        crop_size=32, scale_range=(1.0, 1.0), hflip=False, color_jitter=0.5
    )
    torch.manual_seed(0)
    img, m = t(image, mask)
    assert torch.equal(m, mask)
    plain = segmentation_eval_transforms()(image, mask)[0]
    assert not torch.allclose(img, plain)


def test_eval_transforms_keep_geometry_and_accept_plain_inputs():
    ds = SyntheticSegmentation("val", num_images=1, image_size=(20, 30))
    image, mask = ds[0]
    t = segmentation_eval_transforms()
    img, m = t(image, mask)
    assert (
        img.shape == (3, 20, 30) and img.dtype == torch.float32 and torch.equal(m, mask)
    )
    expected = (
        image.float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    ) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(img, expected, atol=1e-5)
    # plain numpy inputs are wrapped: the mask must not be treated as an image
    img2, m2 = t(image.permute(1, 2, 0).numpy(), mask.numpy().astype(np.uint8))
    assert (
        torch.allclose(img2, img) and m2.dtype == torch.int64 and torch.equal(m2, mask)
    )


def test_pad_collate_shapes_and_fill():
    a = (torch.ones(3, 5, 7), torch.ones(5, 7, dtype=torch.int64))
    b = (torch.full((3, 8, 4), 2.0), torch.full((8, 4), 2, dtype=torch.int64))
    images, masks = pad_collate([a, b])
    assert (
        images.shape == (2, 3, 8, 7)
        and masks.shape == (2, 8, 7)
        and masks.dtype == torch.int64
    )
    assert torch.all(images[0, :, :5, :7] == 1) and torch.all(images[0, :, 5:] == 0)
    assert torch.all(masks[0, 5:] == IGNORE_INDEX) and torch.all(
        masks[1, :, 4:] == IGNORE_INDEX
    )
    assert torch.all(masks[1, :, :4] == 2)
    images, masks = pad_collate([a, b], ignore_index=99, multiple=32)
    assert images.shape == (2, 3, 32, 32) and masks[0, 31, 31] == 99


def test_train_transform_output_batches_with_dataloader():
    ds = SyntheticSegmentation(
        "train",
        num_images=4,
        image_size=24,
        transforms=segmentation_train_transforms(crop_size=16),
    )
    images, masks = next(
        iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=pad_collate))
    )
    assert images.shape == (4, 3, 16, 16) and masks.shape == (4, 16, 16)


def test_bad_arguments():
    with pytest.raises(ValueError):
        RandomScale((2.0, 1.0))
    with pytest.raises(ValueError):
        segmentation_train_transforms(crop_size=0)
