"""The crops stage: crop geometry, resize, normalisation, the whole-image box, crop batches."""

from __future__ import annotations

import numpy as np
import torch

from fakescope.crops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TF_MEAN,
    TF_STD,
    CropPolicy,
    crop_batch,
    crop_face,
    crop_faces,
    for_whole_image,
    to_tensor,
    whole_image_box,
)


def synthetic() -> np.ndarray:
    """Grey image with a 40 x 80 red box at (60, 40) in a green band (40 px on every side)."""
    image = np.full((200, 300, 3), 128, np.uint8)
    image[0:160, 20:140] = (0, 255, 0)
    image[40:120, 60:100] = (255, 0, 0)
    return image


def test_crop_stretch_fills_the_square_with_the_box():
    crop = crop_face(
        synthetic(), (60, 40, 100, 120), CropPolicy(size=64, margin=0.0, resize="stretch")
    )
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert np.all(crop[2:-2, 2:-2] == (255, 0, 0))
    # With margin 0.5 the box grows by half its width/height on every side: red is the middle half.
    crop = crop_face(
        synthetic(), (60, 40, 100, 120), CropPolicy(size=64, margin=0.5, resize="stretch")
    )
    assert np.all(crop[18:46, 18:46] == (255, 0, 0)) and np.all(crop[:14, :14] == (0, 255, 0))


def test_crop_pad_keeps_the_aspect_ratio():
    crop = crop_face(synthetic(), (60, 40, 100, 120), CropPolicy(size=64, margin=0.0, resize="pad"))
    assert crop.shape == (64, 64, 3)
    # 40 x 80 -> 32 x 64, centred: black bars of 16 px left and right.
    assert np.all(crop[:, :16] == 0) and np.all(crop[:, 48:] == 0)
    assert np.all(crop[2:-2, 18:46] == (255, 0, 0))


def test_crop_outside_the_image_is_black():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(image, (-50, -50, 50, 50), CropPolicy(size=100, margin=0.0))
    assert np.all(crop[:48, :48] == 0) and np.all(crop[52:, 52:] == 200)
    crop = crop_face(image, (500, 500, 540, 540), CropPolicy(size=32, margin=1 / 3, resize="pad"))
    assert crop.shape == (32, 32, 3) and not crop.any()


def test_to_tensor_normalises_channels_last():
    crops = [np.full((16, 16, 3), 255, np.uint8), np.zeros((16, 16, 3), np.uint8)]
    x = to_tensor(crops, CropPolicy(size=16, mean=TF_MEAN, std=TF_STD))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x[0], torch.ones(3, 16, 16)) and torch.allclose(
        x[1], -torch.ones(3, 16, 16)
    )
    x = to_tensor(crops[:1], CropPolicy(size=16, mean=IMAGENET_MEAN, std=IMAGENET_STD))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 0, 0], expected)
    assert to_tensor([], CropPolicy(size=16)).shape == (0, 3, 16, 16)


def test_whole_image_box_covers_the_image_whatever_the_shape_type():
    assert whole_image_box(np.zeros((30, 50, 3)).shape) == (0.0, 0.0, 50.0, 30.0)
    assert whole_image_box(torch.zeros(2, 3, 30, 50).shape[-2:]) == (0.0, 0.0, 50.0, 30.0)
    assert all(isinstance(v, float) for v in whole_image_box((30, 50)))


def test_crop_batch_is_to_tensor_of_each_crop_and_whole_drops_the_margin():
    images = [synthetic(), synthetic()[::-1].copy()]
    boxes = [(60.0, 40.0, 100.0, 120.0), (10.0, 20.0, 90.0, 60.0)]
    policy = CropPolicy(size=32, margin=0.5, resize="pad", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    expected = to_tensor([crop_face(i, b, policy) for i, b in zip(images, boxes)], policy)
    assert torch.equal(crop_batch(images, boxes, policy), expected)
    # An input that already is a face: its whole box, no margin, but the policy's normalisation.
    whole = [whole_image_box(i.shape) for i in images]
    crops = crop_faces(images, whole, policy, whole=True)
    assert all(
        np.array_equal(c, crop_face(i, w, for_whole_image(policy)))
        for c, i, w in zip(crops, images, whole)
    )
    assert not np.array_equal(crops[0], crop_face(images[0], whole[0], policy))
    assert torch.equal(crop_batch(images, whole, policy, whole=True), to_tensor(crops, policy))
