"""``stnet explain`` (Grad-CAM), ``stnet synth --boxes`` and ``stnet features`` (clip embeddings).

Exact checks on an untrained tiny model and small videos of a coloured square; what a *learnt* model's
explanations and embeddings show (the pointing game, nearest neighbours) is checked on the demo's model
in tests/test_demo.py, which trains it anyway.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stnet.checkpoint import eval_model, save_checkpoint
from stnet.cli import main
from stnet.config import Config
from stnet.datasets import ClipSpec, Sample, VideoClipDataset
from stnet.explain import grad_cam
from stnet.features import Embedder, Inputs, embed_clips, extract
from stnet.model import build_model
from stnet.synth import MOTIONS, box_mask, object_boxes, read_boxes, sample_scene
from videos import write_video

SIZE, FRAMES, SQUARE = 48, 16, 12
CLASSES = ("red", "green", "blue")


def _square_video(label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames (FRAMES, SIZE, SIZE, 3) of a square of colour ``label`` drifting over grey texture, and
    its boxes (FRAMES, 4)."""
    grey = rng.uniform(50, 130) + rng.normal(0, 18, (FRAMES, SIZE, SIZE, 1))
    frames = np.repeat(grey, 3, axis=3)
    start = rng.uniform(0, SIZE - SQUARE, 2)
    step = rng.uniform(-1, 1, 2)
    boxes = []
    for t in range(FRAMES):
        x, y = np.clip(start + t * step, 0, SIZE - SQUARE).astype(int)
        colour = np.full(3, 40.0)
        colour[label] = 230
        frames[t, y : y + SQUARE, x : x + SQUARE] = colour
        boxes.append((x, y, x + SQUARE, y + SQUARE))
    return np.clip(frames, 0, 255).astype(np.uint8), np.array(boxes)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """A list-style dataset (train 1, val 3 per class) and the boxes of every video."""
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    boxes = {}
    for split, per_class in (("train", 1), ("val", 3)):
        lines = []
        for label, name in enumerate(CLASSES):
            for i in range(per_class):
                rel = f"videos/{name}/{split}_{i}.mp4"
                frames, boxes[rel] = _square_video(label, rng)
                write_video(root / rel, FRAMES, height=SIZE, width=SIZE, frames=list(frames))
                lines.append(f"{rel} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(CLASSES)))
    return root, boxes


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """An untrained tiny model as a training checkpoint (for the exact-equality tests)."""
    cfg = dataclasses.replace(
        Config(), depth=18, T=2, N=2, target_size=32, short_size=36, class_num=3, dataset_type="kinetics400"
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("random") / "model.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "classes": list(CLASSES)})
    return path


# ----------------------------------------------------------------------------------------------------
# synth --boxes
# ----------------------------------------------------------------------------------------------------


def test_synth_boxes_hold_exactly_the_pixels_the_object_changes(tmp_path):
    for motion in MOTIONS[:4]:
        scene = sample_scene(motion, np.random.default_rng([3, MOTIONS.index(motion)]), 48, 24)
        boxes = object_boxes(scene)
        hidden = dataclasses.replace(
            scene, main=dataclasses.replace(scene.main, radius=scene.main.radius * 0)
        )
        from stnet.synth import draw_scene

        drawn = draw_scene(scene, np.random.default_rng(1)).astype(int)
        without = draw_scene(hidden, np.random.default_rng(1)).astype(int)
        changed = np.abs(drawn - without).max(axis=3) > 0
        for t in range(24):
            mask = box_mask(boxes[t], 48)
            assert not (changed[t] & ~mask).any()  # every pixel the object touches is in its box
            rows, cols = np.nonzero(changed[t])
            if not (boxes[t][:2] < 0).any() and not (boxes[t][2:] > 48).any():  # no wrap: tight
                assert abs(cols.min() - boxes[t][0]) <= 1 and abs(cols.max() + 1 - boxes[t][2]) <= 1
                assert abs(rows.min() - boxes[t][1]) <= 1 and abs(rows.max() + 1 - boxes[t][3]) <= 1
    out = tmp_path / "synth"
    argv = ["synth", "--out", str(out), "--per-class", "2", "--val-fraction", "0.5", "--test-per-class", "0"]
    argv += ["--size", "32", "--frames", "16", "--classes", "grows,moves_up", "--workers", "1", "--boxes"]
    assert main([*argv, "--quiet"]) == 0
    boxes = read_boxes(out / "boxes.json")
    assert sorted(boxes) == sorted(
        line.split()[0] for s in ("train", "val") for line in (out / f"{s}.txt").open()
    )
    scene = sample_scene("moves_up", np.random.default_rng([0, MOTIONS.index("moves_up"), 1]), 32, 16)
    assert np.array_equal(boxes["videos/moves_up/moves_up_0001.mp4"], object_boxes(scene))


# ----------------------------------------------------------------------------------------------------
# explain
# ----------------------------------------------------------------------------------------------------


def test_grad_cam_equals_the_definition_and_explain_writes_grid_and_animation(
    squares, random_checkpoint, tmp_path
):
    root, _ = squares
    video = root / "videos/green/val_0.mp4"
    model, cfg, _ = eval_model(random_checkpoint)
    clip = VideoClipDataset([Sample(video, 0)], ClipSpec.from_config(cfg), "val", augment=False)[0][0][None]
    cam = grad_cam(model, clip, "layer3", class_index=2)
    # the definition, by autograd on the stage's output directly
    x = clip.reshape(-1, *clip.shape[2:])
    x = model._stem_pool(model.relu(model.bn1(model.conv1(x))))
    a = model.temp1(model.layer2(model.layer1(x)), 2)
    a3 = model.layer3(a).detach().requires_grad_()
    feats = model.layer4(model.temp2(a3, 2)).mean(dim=(2, 3)).view(1, 2, -1).transpose(1, 2)
    model.forward_head(feats)[0, 2].backward()
    expected = torch.relu((a3.grad.mean(dim=(2, 3), keepdim=True) * a3).sum(1)).detach().numpy()
    assert cam.maps.shape == (2, *a3.shape[2:]) and np.allclose(cam.maps, expected, atol=1e-6)

    out = tmp_path / "explained"
    argv = ["explain", str(video), "--checkpoint", str(random_checkpoint), "--out", str(out)]
    assert main([*argv, "--class", "blue", "--json", "--tile", "32"]) == 0
    grid = Image.open(out / "val_0.gradcam.png")
    assert grid.size[0] > 2 * 32 and grid.size[1] > 2 * 32
    gif = Image.open(out / "val_0.gradcam.gif")
    assert gif.n_frames == FRAMES
    assert main([*argv, "--animation", "mp4", "--layer", "layer2"]) == 0
    import av

    with av.open(str(out / "val_0.gradcam.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES


def test_explain_refuses_exports_and_unknown_classes(squares, random_checkpoint, tmp_path, capsys):
    root, _ = squares
    video = str(root / "videos/red/val_0.mp4")
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"onnx")
    assert main(["explain", video, "--model", str(fake), "--out", str(tmp_path / "o")]) == 1
    assert main(["explain", video, "--checkpoint", str(fake), "--out", str(tmp_path / "o")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("needs gradients" in e and "checkpoint" in e for e in errors)
    argv = ["explain", video, "--checkpoint", str(random_checkpoint), "--out", str(tmp_path / "o")]
    assert main([*argv, "--class", "purple"]) == 1
    assert "unknown --class 'purple'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------------


def _embedder(model: torch.nn.Module, cfg: Config, per_segment: bool = False, calls: list | None = None):
    @torch.no_grad()
    def run(clips: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(len(clips))
        return embed_clips(model, torch.from_numpy(clips), per_segment).numpy()

    return Embedder(cfg, list(CLASSES), run, {"model": "test"})


def _expected_rows(model, spec, videos, views, per_segment=False):
    dataset = VideoClipDataset([Sample(v, 0) for v in videos], spec, "val", test_views=views, augment=False)
    rows = []
    with torch.no_grad():
        for i in range(len(videos)):
            clips, _, _, weights = dataset.distinct_views(i)
            feats = model.forward_features(clips)
            out = feats.transpose(1, 2) if per_segment else model.forward_head(feats, pre_logits=True)
            w = weights.double().view(-1, *[1] * (out.ndim - 1))
            rows.append(((out.double() * w).sum(0) / w.sum()).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("per_segment", [False, True])
def test_features_rows_equal_the_models_own_forward_head(squares, random_checkpoint, tmp_path, per_segment):
    root, _ = squares
    videos = sorted((root / "videos").rglob("val_*.mp4"))[:3]
    out = tmp_path / "features"
    argv = ["features", *map(str, videos), "--checkpoint", str(random_checkpoint), "--out", str(out)]
    argv += ["--clips", "2", "--crops", "3", "--batch", "2", "--quiet", "--json"]
    assert main(argv + (["--per-segment"] if per_segment else [])) == 0
    model, cfg, _ = eval_model(random_checkpoint)
    expected = _expected_rows(model, ClipSpec.from_config(cfg), videos, (2, 3), per_segment)
    rows = np.load(out / "features.npy")
    index = (out / "index.csv").read_text().splitlines()
    assert index[0] == "row,path,label" and index[1:] == [f"{i},{v}," for i, v in enumerate(videos)]
    assert rows.shape == expected.shape == ((3, 2, 512) if per_segment else (3, 256))
    assert np.allclose(rows, expected, atol=1e-5)


def test_features_of_a_prepared_split_carry_labels_and_resume_without_recomputing(
    squares, random_checkpoint, tmp_path, monkeypatch
):
    import stnet.features as features

    root, _ = squares
    model, cfg, _ = eval_model(random_checkpoint)
    from stnet.features import split_inputs

    inputs = split_inputs(root, "val", cfg, CLASSES, None)
    assert inputs.labels == [name for name in CLASSES for _ in range(3)]
    monkeypatch.setattr(features, "PART_ROWS", 2)
    calls: list[int] = []
    embedder = _embedder(model, cfg, calls=calls)
    crash = Embedder(cfg, list(CLASSES), lambda c: _fail_after(calls, 2, embedder.run, c), {"model": "test"})
    out = tmp_path / "split"
    with pytest.raises(KeyboardInterrupt):
        extract(crash, inputs, out, batch=1, progress=False)  # killed after 2 parts (4 videos)
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        "part-000000.csv", "part-000000.npy", "part-000001.csv", "part-000001.npy"
    ]  # fmt: skip
    calls.clear()
    report = extract(embedder, inputs, out, batch=1, progress=False)
    assert report.computed == 5 and sum(calls) == 5  # the 4 committed rows were not computed again
    assert not (out / "parts").exists() and report.rows == 9
    expected = _expected_rows(model, ClipSpec.from_config(cfg), [Path(k) for k in inputs.keys], None)
    assert np.allclose(np.load(out / "features.npy"), expected, atol=1e-5)
    index = (out / "index.csv").read_text().splitlines()
    assert index[1].endswith(",red") and index[-1].endswith(",blue")
    calls.clear()
    assert extract(embedder, inputs, out, batch=1, progress=False).computed == 0 and not calls
    other = Inputs(inputs.dataset, inputs.keys, inputs.labels)
    with pytest.raises(features.FeatureError, match="other settings"):
        extract(embedder, other, out, per_segment=True, progress=False)


def _fail_after(calls: list, allowed: int, run, clips):
    if len(calls) >= 2 * allowed:
        raise KeyboardInterrupt
    return run(clips)


@pytest.mark.slow
def test_features_from_an_onnx_export_with_pre_logits_equal_the_checkpoints(
    squares, random_checkpoint, tmp_path
):
    """An ONNX file that also outputs pre_logits gives the checkpoint's rows."""
    import onnx

    from stnet.runners import META_KEY, ModelInfo, quiet_torch

    root, _ = squares
    model, cfg, names = eval_model(random_checkpoint)

    class Both(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            f = self.m.forward_features(x)
            return self.m.forward_head(f), self.m.forward_head(f, pre_logits=True)

    path = tmp_path / "both.onnx"
    clip = torch.zeros(1, cfg.T, 3 * cfg.N, cfg.target_size, cfg.target_size)
    with quiet_torch():
        torch.onnx.export(
            Both(model), (clip,), str(path), input_names=["clips"], output_names=["logits", "pre_logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}}, dynamo=True, verbose=False,
        )  # fmt: skip
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, ModelInfo.from_config(cfg, names).to_json()
    onnx.save(proto, str(path))
    videos = sorted((root / "videos").rglob("val_0.mp4"))
    argv = ["features", *map(str, videos), "--model", str(path), "--out", str(tmp_path / "f"), "--quiet"]
    assert main(argv) == 0
    expected = _expected_rows(model, ClipSpec.from_config(cfg), videos, None)
    assert np.allclose(np.load(tmp_path / "f" / "features.npy"), expected, atol=1e-4)


def _onnx_file(path: Path, outputs: list[str], info_json: str) -> Path:
    """A tiny stnet-labelled ONNX graph whose outputs are ``outputs`` (each the input's global mean)."""
    import onnx
    from onnx import TensorProto, helper

    from stnet.runners import META_KEY

    clips = helper.make_tensor_value_info("clips", TensorProto.FLOAT, ["batch", 2, 6, 32, 32])
    nodes = [helper.make_node("ReduceMean", ["clips"], [name], keepdims=0) for name in outputs]
    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, []) for name in outputs]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [clips], values), opset_imports=[helper.make_opsetid("", 13)]
    )
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, info_json
    onnx.save(model, str(path))
    return path


def test_features_refuse_an_onnx_export_without_the_embedding_in_one_line(
    squares, random_checkpoint, tmp_path, capsys
):
    from stnet.runners import ModelInfo

    root, _ = squares
    _, cfg, names = eval_model(random_checkpoint)
    info = ModelInfo.from_config(cfg, names).to_json()
    logits_only = _onnx_file(tmp_path / "logits.onnx", ["logits"], info)
    video = str(root / "videos/red/val_0.mp4")
    for flags in ([], ["--per-segment"]):
        argv = ["features", video, "--model", str(logits_only), "--out", str(tmp_path / "f"), *flags]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "outputs logits only" in err[0] and "--checkpoint" in err[0], err
    assert not (tmp_path / "f").exists()


def test_features_json_summary(squares, random_checkpoint, tmp_path, capsys):
    root, _ = squares
    video = str(root / "videos/red/val_1.mp4")
    out = tmp_path / "one"
    assert main(["features", video, "--checkpoint", str(random_checkpoint), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 1 and summary["shape"] == [1, 256] and summary["computed"] == 1
