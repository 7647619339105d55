import csv
import math
import pickle

import numpy as np
import pytest
import torch

from stnet.metrics import EvalResult, MetricsError, ScoreAccumulator, load_npz, topk_correct
from stnet.plots import plot_confusion, plot_curves


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Label ranks by hand: row 0 label 1 is first; row 1 label 1 is last (6th); row 2 label 3 is 4th.
TOPK_SCORES = [
    [0.1, 0.9, 0.2, 0.3, 0.4, 0.5],
    [0.9, 0.1, 0.2, 0.3, 0.4, 0.5],
    [0.6, 0.1, 0.2, 0.3, 0.4, 0.5],
]
TOPK_LABELS = [1, 1, 3]


@pytest.mark.parametrize("as_tensor", [False, True])
def test_topk_correct_by_hand(as_tensor):
    scores = torch.tensor(TOPK_SCORES) if as_tensor else np.array(TOPK_SCORES)
    labels = torch.tensor(TOPK_LABELS) if as_tensor else np.array(TOPK_LABELS)
    assert topk_correct(scores, labels) == {1: 1, 5: 2}
    assert topk_correct(scores, labels, ks=(1, 2, 4, 10)) == {1: 1, 2: 1, 4: 2, 10: 3}  # 10 → 6 classes


def test_topk_correct_refuses_bad_labels():
    with pytest.raises(MetricsError, match=r"label 6 is outside \[0, 6\)"):
        topk_correct(np.array(TOPK_SCORES), [1, 6, 0])
    with pytest.raises(ValueError, match="positive"):
        topk_correct(np.array(TOPK_SCORES), TOPK_LABELS, ks=(0,))


def _imbalanced() -> ScoreAccumulator:
    """Class 0: four videos, all right; class 1: one video, predicted as 2; class 2: no videos."""
    acc = ScoreAccumulator()
    logits = np.array([[3.0, 1.0, 0.0]] * 4 + [[0.0, 1.0, 3.0]])
    acc.add([10, 11, 12, 13, 14], logits, [0, 0, 0, 0, 1])
    return acc


def test_mean_class_accuracy_differs_from_top1_and_confusion_is_exact():
    r = _imbalanced().result()
    assert r.num_videos == 5 and r.num_classes == 3
    assert r.top1 == pytest.approx(0.8)
    assert r.top5 == 1.0  # k clipped to the 3 classes
    np.testing.assert_array_equal(r.per_class[:2], [1.0, 0.0])
    assert math.isnan(r.per_class[2])
    assert r.mean_class_accuracy == pytest.approx(0.5)  # over classes 0 and 1 only
    np.testing.assert_array_equal(r.confusion, [[4, 0, 0], [0, 0, 1], [0, 0, 0]])
    assert r.confusion.dtype == np.int64
    np.testing.assert_array_equal(r.video_ids, [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(r.predictions, [0, 0, 0, 0, 2])
    assert r.summary_line() == "top1 80.00% top5 100.00% mean-class 50.00% over 5 videos (1 view each)"
    js = r.to_json()
    assert js["per_class_accuracy"] == [1.0, 0.0, None] and js["num_videos"] == 5


def _three_view_video(acc: ScoreAccumulator) -> None:
    """Video 7 (class 0): view 0 says class 1 firmly; views 1 and 2 say class 0 mildly; split over batches."""
    acc.add([7, 8], np.array([[0.0, 5.0], [0.0, 1.0]]), [0, 1], view_ids=[0, 0])
    acc.add([7, 7], np.array([[2.0, 0.0], [2.0, 0.0]]), [0, 0], view_ids=[1, 2])


def test_softmax_averaging_changes_the_prediction():
    acc = ScoreAccumulator()
    _three_view_video(acc)
    single = EvalResult.from_scores(np.array([[0.0, 5.0]]), [0])
    assert single.top1 == 0.0  # the first view alone is wrong
    r = acc.result()
    p1 = (_sigmoid(5.0) + 2 * _sigmoid(-2.0)) / 3  # 0.4106 < 0.5
    np.testing.assert_allclose(r.scores[0], [1 - p1, p1], rtol=1e-6)
    np.testing.assert_array_equal(r.num_views, [3, 1])
    np.testing.assert_array_equal(r.predictions, [0, 1])
    assert r.top1 == 1.0
    assert r.summary_line().endswith("over 2 videos (1 to 3 views each, softmax-averaged)")
    # Averaged logits (4/3, 5/3) pick class 1: the averaging rule matters.
    by_logits = ScoreAccumulator(average="logits")
    _three_view_video(by_logits)
    logits = by_logits.result()
    np.testing.assert_allclose(logits.scores[0], [4 / 3, 5 / 3], rtol=1e-6)
    assert logits.top1 == 0.5 and logits.average == "logits"
    with pytest.raises(ValueError, match="softmax, logits"):
        ScoreAccumulator(average="mean")
    with pytest.raises(MetricsError, match="logits-averaged scores into softmax-averaged"):
        acc.merge(by_logits)


def test_duplicate_video_view_is_counted_once():
    acc = ScoreAccumulator()
    acc.add([5, 5], np.array([[0.0, 5.0], [2.0, 0.0]]), [1, 1], view_ids=[0, 1])
    acc.add([5], np.array([[0.0, 5.0]]), [1], view_ids=[0])  # DistributedSampler padding: same view again
    acc.add([5, 5], np.array([[0.0, 5.0], [0.0, 5.0]]), [1, 1], view_ids=[2, 2])  # repeated in one batch
    assert acc.num_scores == 3 and acc.num_videos == 1
    r = acc.result()
    p1 = (2 * _sigmoid(5.0) + _sigmoid(-2.0)) / 3
    np.testing.assert_allclose(r.scores[0, 1], p1, rtol=1e-6)
    np.testing.assert_array_equal(r.num_views, [3])


def test_merge_of_partial_accumulators_equals_one_accumulator():
    rng = np.random.default_rng(0)
    num_videos, views, classes = 9, 3, 5
    labels = rng.integers(0, classes, num_videos)
    rows = [(v, k) for v in range(num_videos) for k in range(views)]
    logits = rng.normal(size=(len(rows), classes)) * 3
    whole = ScoreAccumulator()
    rank0, rank1 = ScoreAccumulator(), ScoreAccumulator()
    for i, (v, k) in enumerate(rows):  # every video's views split over the two ranks
        whole.add([v], logits[i : i + 1], [labels[v]], view_ids=[k])
        (rank0 if i % 2 == 0 else rank1).add([v], logits[i : i + 1], [labels[v]], view_ids=[k])
    rank1.add([1] * 3, logits[3:6], [labels[1]] * 3, view_ids=[0, 1, 2])  # padding: all of video 1 again
    # What each rank sends through gather_object: one row per video, picklable plain numpy.
    states = [pickle.loads(pickle.dumps(a.state())) for a in (rank0, rank1)]
    assert all(isinstance(states[0][k], np.ndarray) for k in ("video_ids", "sums", "labels", "weights"))
    assert states[0]["sums"].shape == (num_videos, classes) and states[0]["sums"].dtype == np.float32
    for first, second in ((0, 1), (1, 0)):
        merged = ScoreAccumulator.from_state(states[first]).merge(ScoreAccumulator.from_state(states[second]))
        a, b = whole.result(), merged.result()
        assert merged.num_scores == num_videos * views
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        for name in ("labels", "video_ids", "num_views", "confusion", "per_class"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert (a.top1, a.top5, a.mean_class_accuracy) == (b.top1, b.top5, b.mean_class_accuracy)


def test_a_partial_overlap_of_views_is_refused():
    """Sums cannot be taken apart: views {0, 1} and {1, 2} of one video cannot be merged exactly."""
    one, two = ScoreAccumulator(), ScoreAccumulator()
    one.add([4, 4], np.zeros((2, 3)), [0, 0], view_ids=[0, 1])
    two.add([4, 4], np.ones((2, 3)), [0, 0], view_ids=[1, 2])
    with pytest.raises(MetricsError, match="video 4: two parts of its views overlap"):
        one.merge(two)


def _old_way(video_ids, view_ids, logits, labels):
    """The accumulator as it was: every view's logits kept, softmax per view in float64, mean per video,
    first score of a repeated (video, view) only."""
    seen, per_video = set(), {}
    for v, k, row, y in zip(video_ids, view_ids, logits, labels, strict=True):
        if (v, k) not in seen:
            seen.add((v, k))
            p = np.exp(row.astype(np.float64) - row.max())
            per_video.setdefault(v, ([], y))[0].append(p / p.sum())
    ids = sorted(per_video)
    return np.array([np.mean(per_video[v][0], axis=0) for v in ids]), np.array([per_video[v][1] for v in ids])


def test_running_sums_give_the_old_top1_top5_and_mean_class():
    rng = np.random.default_rng(3)
    num_videos, views, classes = 40, 6, 12
    labels = rng.integers(0, classes, num_videos)
    rows = [(v, k) for v in range(num_videos) for k in range(views)]
    rows += [rows[i] for i in rng.integers(0, len(rows), 20)]  # repeats, ignored
    order = rng.permutation(len(rows))
    video_ids = np.array([rows[i][0] for i in order])
    view_ids = np.array([rows[i][1] for i in order])
    logits = rng.normal(size=(len(order), classes)).astype(np.float32) * 4
    logits[np.arange(len(order)), labels[video_ids]] += 1.5  # better than chance, not perfect
    for i in range(len(order)):  # a repeat carries the first score of its (video, view)
        first = np.flatnonzero((video_ids == video_ids[i]) & (view_ids == view_ids[i]))[0]
        logits[i] = logits[first]
    scores, ref_labels = _old_way(video_ids, view_ids, logits, labels[video_ids])
    ref = EvalResult.from_scores(scores, ref_labels, num_views=np.full(num_videos, views))
    acc = ScoreAccumulator()
    for lo in range(0, len(order), 7):  # batches of 7 rows
        acc.add(
            video_ids[lo : lo + 7], logits[lo : lo + 7], labels[video_ids[lo : lo + 7]], view_ids[lo : lo + 7]
        )
    new = acc.result()
    assert 0.2 < ref.top1 < 0.9  # a case where averaging decides
    assert (new.top1, new.top5, new.mean_class_accuracy) == (ref.top1, ref.top5, ref.mean_class_accuracy)
    np.testing.assert_allclose(new.scores, ref.scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(new.confusion, ref.confusion)
    np.testing.assert_array_equal(new.num_views, ref.num_views)


def test_a_weighted_score_counts_as_its_identical_views():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 4))
    repeated, weighted = ScoreAccumulator(), ScoreAccumulator()
    repeated.add([0] * 5, logits[[0, 0, 0, 1, 2]], [2] * 5, view_ids=[0, 1, 2, 3, 4])
    weighted.add([0, 0, 0], logits, [2] * 3, view_ids=[0, 3, 4], weights=[3, 1, 1])
    a, b = repeated.result(), weighted.result()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    assert a.num_views.tolist() == b.num_views.tolist() == [5]
    with pytest.raises(MetricsError, match="weights >= 1"):
        weighted.add([1], logits[:1], [0], weights=[0])


def test_unreadable_videos_are_misses_unless_skipped(tmp_path):
    acc = _imbalanced()  # 5 videos, 4 right
    acc.add_unreadable([20, 21], [1, -1])  # one of class 1, one of unknown label (a reference pickle)
    r = acc.result()
    assert (r.num_videos, r.num_evaluated, r.unreadable) == (7, 5, 2)
    assert r.top1 == pytest.approx(4 / 7) and r.topk_correct(1) == 4
    assert r.top5 == pytest.approx(5 / 7)
    np.testing.assert_array_equal(r.per_class[:2], [1.0, 0.0])  # class 1: 0 of 2
    np.testing.assert_array_equal(r.class_videos, [4, 2, 0])
    assert r.summary_line().endswith("over 7 videos (1 view each); unreadable=2, counted as misses")
    js = r.to_json()
    assert (js["num_videos"], js["evaluated_videos"], js["unreadable_videos"]) == (7, 5, 2)
    r.write_per_class_csv(tmp_path / "per_class.csv")
    with open(tmp_path / "per_class.csv", newline="") as f:
        assert list(csv.reader(f))[1:3] == [
            ["0", "0", "4", "4", "1.000000", "0"],
            ["1", "1", "2", "0", "0.000000", "1"],
        ]
    r.save_npz(tmp_path / "scores.npz")
    again, _ = load_npz(tmp_path / "scores.npz")
    assert (again.top1, again.top5, again.num_videos, again.unreadable) == (r.top1, r.top5, 7, 2)
    skipped = acc.result(skip_unreadable=True)
    assert (skipped.num_videos, skipped.top1, skipped.unreadable) == (5, pytest.approx(0.8), 2)
    np.testing.assert_array_equal(skipped.class_videos, [4, 1, 0])
    assert skipped.summary_line().endswith("; unreadable=2, left out (--skip_unreadable)")
    skipped.save_npz(tmp_path / "skipped.npz")
    assert load_npz(tmp_path / "skipped.npz")[0].top1 == pytest.approx(0.8)


def test_label_conflict_is_refused_and_leaves_the_accumulator_unchanged():
    acc = ScoreAccumulator()
    acc.add([3], np.zeros((1, 4)), [1])
    with pytest.raises(MetricsError, match="video 3 was given label 2, but earlier label 1"):
        acc.add([4, 3], np.zeros((2, 4)), [0, 2], view_ids=[0, 1])
    assert acc.num_scores == 1 and acc.num_videos == 1
    with pytest.raises(MetricsError, match="video 9"):
        acc.add([9, 9], np.zeros((2, 4)), [0, 1], view_ids=[0, 1])
    other = ScoreAccumulator()
    other.add([3], np.zeros((1, 4)), [0], view_ids=[5])
    with pytest.raises(MetricsError, match="video 3"):
        acc.merge(other)


def test_bad_inputs_are_refused():
    acc = ScoreAccumulator()
    with pytest.raises(MetricsError, match="no videos"):
        acc.result()
    acc.add([0], np.zeros((1, 3)), [0])
    with pytest.raises(MetricsError, match="4 classes, earlier ones had 3"):
        acc.add([1], np.zeros((1, 4)), [0])
    with pytest.raises(MetricsError, match="NaN"):
        acc.add([1], np.array([[0.0, math.nan, 0.0]]), [0])
    with pytest.raises(MetricsError, match="integers"):
        acc.add([1.5], np.zeros((1, 3)), [0])


def test_torch_inputs_are_accepted():
    acc = ScoreAccumulator()
    acc.add(
        torch.tensor([0, 1]),
        torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.bfloat16),
        torch.tensor([0, 0]),
    )
    r = acc.result()
    assert r.top1 == 0.5 and r.confusion.tolist() == [[1, 1], [0, 0]]


def test_reference_line_is_the_mindspore_print():
    r = _imbalanced().result()
    assert (
        r.reference_line("/ckpt/stnet-90_100.ckpt")
        == "result: {'top_1_accuracy': 0.8} ckpt= /ckpt/stnet-90_100.ckpt"
    )
    acc = ScoreAccumulator()
    acc.add([0, 1, 2], np.eye(3), [0, 1, 0])
    assert (
        acc.result().reference_line("x.ckpt") == "result: {'top_1_accuracy': 0.6666666666666666} ckpt= x.ckpt"
    )


def test_per_class_csv_and_npz_read_back(tmp_path):
    r = _imbalanced().result()
    names = ["ApplyEyeMakeup", "Band, Marching", "Zumba"]
    r.write_per_class_csv(tmp_path / "per_class.csv", names)
    with open(tmp_path / "per_class.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["class_index", "class_name", "videos", "correct", "accuracy", "unreadable"],
        ["0", "ApplyEyeMakeup", "4", "4", "1.000000", "0"],
        ["1", "Band, Marching", "1", "0", "0.000000", "0"],
        ["2", "Zumba", "0", "0", "", "0"],
    ]
    r.save_npz(tmp_path / "scores.npz", names)
    with np.load(tmp_path / "scores.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["scores"], r.scores)
        np.testing.assert_array_equal(data["labels"], [0, 0, 0, 0, 1])
        np.testing.assert_array_equal(data["video_ids"], [10, 11, 12, 13, 14])
        assert data["class_names"].tolist() == names
    again, again_names = load_npz(tmp_path / "scores.npz")
    assert again_names == names and again.top1 == r.top1
    np.testing.assert_array_equal(again.confusion, r.confusion)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_class.csv", "scores.npz"]  # no temp files left
    with pytest.raises(MetricsError, match="2 class names for 3-class"):
        r.save_npz(tmp_path / "bad.npz", names[:2])


def _assert_real_png(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10  # not one colour
    return img


def test_confusion_png(tmp_path):
    r = _imbalanced().result()
    plot_confusion(r.confusion, ["a", "b", "c"], tmp_path / "confusion.png")
    _assert_real_png(tmp_path / "confusion.png")
    rng = np.random.default_rng(1)
    big = rng.integers(0, 5, (30, 30)) + np.diag(rng.integers(10, 20, 30))
    plot_confusion(big, [f"class_{i}" for i in range(30)], tmp_path / "big.png", normalize=False)
    assert (
        _assert_real_png(tmp_path / "big.png").shape[0]
        > _assert_real_png(tmp_path / "confusion.png").shape[0]
    )


def test_curves_png_with_missing_keys(tmp_path):
    records = [
        {"epoch": e, "train_loss": 4.0 / (e + 1), "lr": 0.01 if e < 3 else 0.001} for e in range(6)
    ] + [{"epoch": 2, "val_top1": 0.41, "val_top5": 0.7}, {"epoch": 5, "val_top1": 0.52, "val_top5": 0.8}]
    plot_curves(records, tmp_path / "curves.png")
    _assert_real_png(tmp_path / "curves.png")
    plot_curves([{"epoch": 0, "lr": 0.1}], tmp_path / "early.png")  # no loss yet, no evaluation yet
    _assert_real_png(tmp_path / "early.png")
