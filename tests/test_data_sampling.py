"""Exact frame indices of the two recipes (the reference's Kinetics and UCF101 loaders) for train, eval,
test views and short videos."""

from __future__ import annotations

import random

import numpy as np
import pytest

from stnet.sampling import frame_indices, kinetics_indices, ucf_indices
from stnet.video import DataError


def segments(indices: list[int], N: int) -> list[list[int]]:
    return [indices[i : i + N] for i in range(0, len(indices), N)]


# ---- Kinetics (TSN) -------------------------------------------------------------------------------------


def test_kinetics_eval_is_centred() -> None:
    # L=100, T=7: avg 14, offset (14-5)//2 = 4
    got = segments(kinetics_indices(100, 7, 5, train=False), 5)
    assert got == [[s + k for k in range(5)] for s in (4, 18, 32, 46, 60, 74, 88)]


def test_kinetics_train_offsets_cover_the_whole_range() -> None:
    rng = random.Random(0)
    offsets: set[int] = set()
    for _ in range(300):
        for i, seg in enumerate(segments(kinetics_indices(100, 7, 5, train=True, rng=rng), 5)):
            assert seg == list(range(seg[0], seg[0] + 5))  # N consecutive frames
            offsets.add(seg[0] - 14 * i)
    assert offsets == set(range(0, 10))  # randint(0, avg - N) inclusive


@pytest.mark.parametrize("train", [True, False])
def test_kinetics_short_videos_wrap(train: bool) -> None:
    rng = random.Random(0)
    # 1 <= avg < N: start i*avg, no randomness
    assert segments(kinetics_indices(20, 7, 5, train=train, rng=rng), 5)[-1] == [12, 13, 14, 15, 16]
    assert segments(kinetics_indices(10, 7, 5, train=train, rng=rng), 5)[6] == [6, 7, 8, 9, 0]
    # avg = 0: start i, modulo L
    assert segments(kinetics_indices(5, 7, 5, train=train, rng=rng), 5)[6] == [1, 2, 3, 4, 0]
    assert kinetics_indices(1, 7, 5, train=train, rng=rng) == [0] * 35


def test_kinetics_test_views_spread_over_the_segment() -> None:
    starts = [kinetics_indices(100, 7, 5, train=False, clip=j, num_clips=3)[0] for j in range(3)]
    assert starts == [1, 4, 7]  # span 9: 9*(2j+1)//6
    assert kinetics_indices(100, 7, 5, train=False, clip=0, num_clips=1) == kinetics_indices(
        100, 7, 5, train=False
    )


# ---- UCF101 (the MindSpore GPU recipe) -------------------------------------------------------------------


def reference_ucf_short(seg_len: int) -> list[int]:
    """The reference's deterministic branch, literally (seg_len <= 10, clip_len 5, rate 2)."""
    index = np.linspace(0, seg_len, num=seg_len // 2)
    index = np.concatenate((index, np.ones(5 - seg_len // 2) * seg_len))
    return np.clip(index, 0, seg_len - 1).astype(np.int64).tolist()


@pytest.mark.parametrize("seg_len", range(1, 11))
def test_ucf_short_segments_match_the_reference(seg_len: int) -> None:
    got = segments(ucf_indices(7 * seg_len, 7, 5, train=False), 5)
    for i, seg in enumerate(got):
        assert seg == [o + i * seg_len for o in reference_ucf_short(seg_len)]


def test_ucf_known_offsets() -> None:
    assert ucf_indices(70, 7, 5, train=False)[:5] == [0, 2, 5, 7, 9]  # seg_len 10
    assert ucf_indices(49, 7, 5, train=False)[:10] == [0, 3, 6, 6, 6, 7, 10, 13, 13, 13]  # seg_len 7
    # seg_len 14 > 10: eval window centred in the train range [0, 3] -> start 1
    assert segments(ucf_indices(100, 7, 5, train=False), 5)[2] == [29, 31, 34, 36, 38]


def test_ucf_train_windows_match_the_reference_range() -> None:
    rng = random.Random(0)
    starts: set[int] = set()
    for _ in range(300):
        for i, seg in enumerate(segments(ucf_indices(100, 7, 5, train=True, rng=rng), 5)):
            start = seg[0] - 14 * i
            assert [o - seg[0] for o in seg] == [0, 2, 5, 7, 9]
            starts.add(start)
    # the reference: end = np.random.randint(10, seg_len) (exclusive), start = end - 10
    assert starts == {0, 1, 2, 3}


def test_ucf_videos_shorter_than_T_have_no_negative_index() -> None:
    # the reference yields -1 for seg_len 0; here segment i is frame i*L//T repeated
    assert segments(ucf_indices(3, 7, 5, train=False), 5) == [[f] * 5 for f in (0, 0, 0, 1, 1, 2, 2)]
    assert ucf_indices(1, 7, 5, train=True, rng=random.Random(0)) == [0] * 35


@pytest.mark.parametrize("recipe", ["ucf101", "kinetics400"])
@pytest.mark.parametrize("length", [1, 2, 6, 7, 8, 34, 35, 36, 71, 300])
@pytest.mark.parametrize("T,N", [(7, 5), (3, 2), (1, 1), (4, 8)])
def test_indices_always_valid(recipe: str, length: int, T: int, N: int) -> None:
    rng = random.Random(length)
    for train in (True, False):
        got = frame_indices(recipe, length, T, N, train=train, rng=rng)
        assert len(got) == T * N and all(0 <= i < length for i in got)
    for j in range(4):
        got = frame_indices(recipe, length, T, N, train=False, clip=j, num_clips=4)
        assert len(got) == T * N and all(0 <= i < length for i in got)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="no frames"):
        frame_indices("ucf101", 0, 7, 5, train=False)
    with pytest.raises(ValueError, match="rng"):
        kinetics_indices(10, 7, 5, train=True)
    with pytest.raises(ValueError, match="recipe"):
        frame_indices("hmdb", 10, 7, 5, train=False)
