"""The crops stage: crop geometry, resize, normalisation, the whole-image box, crop batches."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from fakescope.crops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SHARPNESS_CROP,
    TF_MEAN,
    TF_STD,
    CropPolicy,
    as_batch,
    crop_batch,
    crop_face,
    crop_faces,
    crop_faces_tensor,
    face_qp,
    for_whole_image,
    normalise,
    sharpness,
    sharpness_tensor,
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
    crops = crop_faces(images, whole, policy, crops=True)
    assert all(
        np.array_equal(c, crop_face(i, w, for_whole_image(policy)))
        for c, i, w in zip(crops, images, whole)
    )
    assert not np.array_equal(crops[0], crop_face(images[0], whole[0], policy))
    assert torch.equal(crop_batch(images, whole, policy, crops=True), to_tensor(crops, policy))


def test_tensor_crops_are_the_numpy_crops_byte_for_byte():
    """The path a GPU takes (frames as tensors, faces cut and resized there), run on CPU
    tensors, gives crop_faces' bytes: boxes inside, across the edges and wholly outside the
    frame, for both resize policies, and the whole-image case."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [
        (30.4, 20.6, 90.2, 100.7),  # inside, shrunk
        (-25.0, -10.0, 40.0, 30.0),  # across the top-left corner
        (130.0, 90.0, 190.0, 170.0),  # across the bottom-right corner
        (200.0, 200.0, 240.0, 220.0),  # wholly outside: black
        (10.0, 10.0, 14.0, 40.0),  # thin, enlarged
    ]
    tensor = torch.from_numpy(frame)
    for resize in ("stretch", "pad"):
        for margin in (0.0, 0.3):
            policy = CropPolicy(size=48, margin=margin, resize=resize)
            got = crop_faces_tensor([tensor] * len(boxes), boxes, policy)
            assert torch.equal(got, as_batch(crop_faces([frame] * len(boxes), boxes, policy), 48))
            assert got.shape == (5, 3, 48, 48) and got.dtype == torch.uint8
    whole = [whole_image_box(frame.shape)]
    policy = CropPolicy(size=64, margin=0.2)
    expected = as_batch(crop_faces([frame], whole, policy, crops=True), 64)
    assert torch.equal(crop_faces_tensor([tensor], whole, policy, crops=True), expected)
    same = CropPolicy(size=120, resize="pad")  # 160 x 120 -> 120 x 90: a resize; 120: none
    assert torch.equal(
        crop_faces_tensor([tensor], [(0.0, 0.0, 120.0, 120.0)], same),
        as_batch(crop_faces([frame], [(0.0, 0.0, 120.0, 120.0)], same), 120),
    )
    assert crop_faces_tensor([], [], policy).shape == (0, 3, 64, 64)


def test_sharpness_on_tensors_is_opencvs():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]
    frames.append(cv2.GaussianBlur(frames[0], (9, 9), 3))  # blurred: far lower
    frames.append(np.full((50, 50, 3), 77, np.uint8))  # flat: 0
    boxes = [(5.0, 8.0, 80.0, 70.0), (-10.0, -5.0, 60.0, 50.0), (0.0, 0.0, 130.0, 90.0)]
    boxes += [(5.0, 8.0, 80.0, 70.0), (0.0, 0.0, 50.0, 50.0)]
    expected = np.array([sharpness(f, b) for f, b in zip(frames, boxes)])
    crops = crop_faces_tensor([torch.from_numpy(f) for f in frames], boxes, SHARPNESS_CROP)
    got = sharpness_tensor(crops)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-9)
    assert expected[3] < expected[0] / 4 and expected[4] == 0


def test_normalise_in_place_is_the_plain_arithmetic():
    crops = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 20, 20, 3), np.uint8))
    batch = crops.permute(0, 3, 1, 2)
    mean, std = (
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    )
    got = normalise(batch, IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(got, (batch.float() / 255 - mean) / std)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(normalise(batch.contiguous(), IMAGENET_MEAN, IMAGENET_STD), got)


def test_face_qp_is_the_mean_quantiser_under_the_box():
    qp = np.full((10, 20), 20, np.int8)  # an 80 x 40 px frame in 4 px cells
    qp[:, 10:] = 40  # its right half coded more coarsely
    assert face_qp(qp, (40, 0, 80, 40), 1.0) == 40
    assert face_qp(qp, (20, 0, 60, 40), 1.0) == 30  # half on each side
    # A frame decoded at half size: the same box covers source pixels 40-120, clipped to 80.
    assert face_qp(qp, (20, 0, 60, 40), 0.5) == 40
    assert face_qp(qp, (-30, -30, -10, -10), 1.0) is None  # outside the frame
    assert face_qp(None, (0, 0, 10, 10), 1.0) is None  # an image, or not H.264
    qp[:, :5] = 0  # no quantiser reported there (FFmpeg, field-coded frames)
    assert face_qp(qp, (0, 0, 20, 40), 1.0) is None
    assert face_qp(qp, (0, 0, 60, 40), 1.0) == 30  # the 5 coded columns of each half
