"""Spatial transforms: sizes, crops (reference rounding), box-resize equivalence, channel layout."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from stnet.transforms import CropPlan, apply_plan, eval_plans, resized_size, to_clip_tensor, train_plan


def test_resized_size() -> None:
    assert resized_size(320, 240, 128) == (171, 128)  # UCF101's 171x128
    assert resized_size(320, 240, 256) == (341, 256)
    assert resized_size(240, 320, 128) == (128, 171)
    assert resized_size(640, 360, 256) == (455, 256)  # 16:9 keeps its aspect
    assert resized_size(640, 360, 256, fixed_aspect=True) == (341, 256)  # the reference's group_scale
    assert resized_size(360, 640, 128, fixed_aspect=True) == (128, 171)
    assert resized_size(455, 256, 256, fixed_aspect=True) == (455, 256)  # short side already right: kept


def test_eval_centre_crop_uses_python_rounding() -> None:
    # spec: 341 -> 58, 256 -> 16; UCF's 171x128 -> (30, 8)
    (plan,) = eval_plans((341, 256), 256, 224)
    assert (plan.x, plan.y, plan.flip) == (58, 16, False)
    (plan,) = eval_plans((171, 128), 128, 112)
    assert (plan.x, plan.y) == (30, 8)


def test_multi_crop_plans() -> None:
    three = eval_plans((171, 128), 128, 112, 3)
    assert [(p.x, p.y) for p in three] == [(0, 8), (30, 8), (59, 8)]
    ten = eval_plans((171, 128), 128, 112, 10)
    assert len(ten) == 10 and [p.flip for p in ten] == [False] * 5 + [True] * 5
    assert {(p.x, p.y) for p in ten} == {(0, 0), (59, 0), (0, 16), (59, 16), (30, 8)}
    with pytest.raises(ValueError, match="num_crops"):
        eval_plans((171, 128), 128, 112, 5)


def test_train_plans() -> None:
    rng = random.Random(0)
    kin = [train_plan("kinetics400", (341, 256), 256, 224, rng) for _ in range(400)]
    assert all(p.scaled == (341, 256) and 0 <= p.x <= 117 and 0 <= p.y <= 32 for p in kin)
    assert {p.x for p in kin} >= {0, 117} and 150 < sum(p.flip for p in kin) < 250
    ucf = [train_plan("ucf101", (171, 128), 128, 112, rng) for _ in range(400)]
    scales = [p.scaled[1] / 128 for p in ucf]
    assert 1.0 <= min(scales) < 1.02 and 1.22 < max(scales) < 1.25
    assert all(abs(p.scaled[0] / 171 - p.scaled[1] / 128) < 0.01 for p in ucf)  # one s for both sides
    assert all(0 <= p.x <= p.scaled[0] - 112 and 0 <= p.y <= p.scaled[1] - 112 for p in ucf)


def test_apply_plan_equals_resize_then_crop() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (128, 171, 3), dtype=np.uint8))
    plan = CropPlan((200, 149), 37, 21, 112, flip=True)
    (got,) = apply_plan([image], plan)
    full = np.asarray(image.resize((200, 149), Image.Resampling.BILINEAR))[21:133, 37:149, :][:, ::-1]
    assert np.abs(got.astype(int) - full.astype(int)).max() <= 1
    # no resize needed: an exact crop
    (got,) = apply_plan([image], CropPlan((171, 128), 30, 8, 112))
    assert np.array_equal(got, np.asarray(image)[8:120, 30:142])


def test_channel_layout() -> None:
    """Channel 3k+c of segment t is colour c of frame k of segment t."""
    T, N, S = 3, 4, 8
    frames = np.zeros((T * N, S, S, 3), np.uint8)
    for f in range(T * N):
        frames[f] = (f, 100 + f, 200 + f)
    clip = to_clip_tensor(frames, T, N, mean=(0, 0, 0), std=(1, 1, 1))
    assert clip.shape == (T, 3 * N, S, S) and clip.dtype == torch.float32
    for t in range(T):
        for k in range(N):
            for c in range(3):
                expected = torch.tensor(float(frames[t * N + k, 0, 0, c]))
                assert torch.allclose(clip[t, 3 * k + c] * 255, expected)


def test_normalisation() -> None:
    frames = np.full((2, 4, 4, 3), 128, np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    clip = to_clip_tensor(frames, 1, 2, mean, std)
    for k in range(2):
        for c in range(3):
            assert torch.allclose(clip[0, 3 * k + c], torch.tensor((128 / 255 - mean[c]) / std[c]), atol=1e-6)


def test_flip_false_never_mirrors_and_changes_nothing_else() -> None:
    """For direction-dependent classes (left vs right): no flips, the same crops as with flips."""
    with_flips = [train_plan("ucf101", (171, 128), 128, 112, random.Random(s)) for s in range(200)]
    without = [train_plan("ucf101", (171, 128), 128, 112, random.Random(s), flip=False) for s in range(200)]
    assert 60 < sum(p.flip for p in with_flips) < 140
    assert not any(p.flip for p in without)
    assert [(p.scaled, p.x, p.y) for p in with_flips] == [(p.scaled, p.x, p.y) for p in without]
