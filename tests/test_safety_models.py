"""Issue 13 item 1 and the export guards: no model or checkpoint file can run code in stnet, formats
come from file names and must agree with the contents, `--trust-model` gates the PyTorch formats, and
`stnet export`/`convert`/`check` fail with one line on bad outputs and operating-system errors.

The crafted files are real archives built here: a genuine stnet torch.export archive whose weights
are replaced by a pickle whose ``__reduce__`` creates a marker file (torch.export.load runs it, as
the first test shows), the same bytes named .onnx and .ts, a TorchScript-layout zip with the pickle as
its data.pkl, and pickled .pt/.pth checkpoints with the payload.
"""

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from stnet import build_model
from stnet.cli import main
from stnet.config import load_config
from stnet.errors import ConfigError
from stnet.export import export_bytes
from stnet.runners import ModelInfo, UnsafeModelError, load_exported
from stnet.weights import save_safetensors
from videos import write_colour_dataset, write_video

MODEL = ["--depth", "18", "--T", "3", "--N", "2", "--target_size", "32", "--short_size", "36"]
MODEL += ["--class_num", "3", "--dataset_type", "kinetics400"]
TRAIN = [*MODEL, "--batch_size", "2", "--workers", "0", "--precision", "fp32", "--channels_last", "false"]
TRAIN += ["--run_eval", "false", "--num_epochs", "1"]


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if any code runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rezip(data: bytes, drop=(), add=None) -> bytes:
    """The zip ``data`` without the entries whose names contain one of ``drop``, plus ``add``."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            if not any(d in name for d in drop):
                target.writestr(name, source.read(name))
        for name, content in (add or {}).items():
            target.writestr(name, content)
    return out.getvalue()


def tiny_model_and_info():
    cfg = load_config(None, MODEL)
    torch.manual_seed(0)
    return build_model(cfg).eval(), ModelInfo.from_config(cfg, ["a", "b", "c"])


def tiny_onnx() -> bytes:
    """A real ONNX model (one Identity node), far cheaper to make than an exported StNet."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("clips", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["clips"], ["logits"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A real stnet model as .pt2 and .ts exports and as .safetensors weights; a real .onnx file."""
    root = tmp_path_factory.mktemp("genuine")
    model, info = tiny_model_and_info()
    for fmt, name in (("pt2", "model.pt2"), ("torchscript", "model.ts")):
        (root / name).write_bytes(export_bytes(model, info, fmt))
    (root / "model.onnx").write_bytes(tiny_onnx())
    save_safetensors(model.state_dict(), root / "weights.safetensors")
    return root


def crafted_pt2(genuine: Path, marker: Path) -> dict[str, bytes]:
    """Three torch.export archives that run the payload in torch.export.load (each a way its loader
    unpickles with weights_only=False)."""
    data = (genuine / "model.pt2").read_bytes()
    root = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    evil = torch_saved({"conv1.weight": Payload(marker)})
    legacy = rezip(data, drop=["/data/weights/"], add={f"{root}/data/weights/model.pt": evil})
    config = json.loads(
        zipfile.ZipFile(io.BytesIO(data)).read(f"{root}/data/weights/model_weights_config.json")
    )
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    pickled = rezip(
        data,
        drop=["model_weights_config.json", f"/data/weights/{first['path_name']}"],
        add={
            f"{root}/data/weights/model_weights_config.json": json.dumps(config),
            f"{root}/data/weights/{first['path_name']}": evil,
        },
    )
    inputs = rezip(data, drop=["/data/sample_inputs/"], add={f"{root}/data/sample_inputs/model.pt": evil})
    return {"legacy_weights": legacy, "pickled_weight": pickled, "sample_inputs": inputs}


@pytest.fixture(scope="module")
def crafted(genuine, tmp_path_factory):
    """Every crafted file, and the marker their payload would create."""
    root = tmp_path_factory.mktemp("crafted")
    marker = root / "PWNED"
    files = {}
    for kind, data in crafted_pt2(genuine, marker).items():
        files[f"{kind}.pt2"] = data
    legacy = files["legacy_weights.pt2"]
    files["model.onnx"] = legacy  # (b) the same archive named .onnx
    files["pt2_named.ts"] = legacy  # (d) ... and named as TorchScript
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as ts:  # (d) a TorchScript-layout archive whose data.pkl is the payload
        ts.writestr("archive/data.pkl", pickle.dumps(Payload(marker), protocol=2))
        ts.writestr("archive/constants.pkl", pickle.dumps((), protocol=2))
        ts.writestr("archive/version", "3\n")
        ts.writestr("archive/code/__torch__/m.py", "def forward(x):\n    return x\n")
    files["layout.ts"] = out.getvalue()
    files["evil.pt"] = torch_saved({"model": Payload(marker)})  # (c) a checkpoint dict, zip format
    files["evil.pth"] = pickle.dumps({"conv1.weight": Payload(marker)}, protocol=2)  # (c) legacy pickle
    paths = {}
    for name, data in files.items():
        paths[name] = root / "files" / name
        paths[name].parent.mkdir(exist_ok=True)
        paths[name].write_bytes(data)
    return paths, marker


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def refused(args, capsys, marker: Path) -> str:
    """Run the CLI; it must fail with one `stnet: error:` line, no traceback, no torch advice, no payload."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code != 0, args
    assert not marker.exists(), f"the payload ran: {args}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stnet: error: "), (args, err)
    assert "Traceback" not in err and "weights_only=False" not in err and "\x1b" not in err, err
    return lines[0]


def test_the_crafted_archives_are_real(genuine, tmp_path):
    """torch.export.load itself runs each crafted archive's payload, so refusing them means something."""
    for kind, data in crafted_pt2(genuine, tmp_path / "marker").items():
        with contextlib.suppress(Exception):  # after running the payload, loading fails one way or another
            torch.export.load(io.BytesIO(data))
        assert (tmp_path / "marker").exists(), kind
        (tmp_path / "marker").unlink()


@pytest.mark.parametrize("trust", [False, True])
def test_predict_and_infer_never_run_a_crafted_model(crafted, tmp_path, capsys, trust):
    paths, marker = crafted
    before = checksums(paths["evil.pt"].parent)
    flag = ["--trust-model"] if trust else []
    for name in ("legacy_weights.pt2", "pickled_weight.pt2", "sample_inputs.pt2", "model.onnx"):
        for command in (["predict", "x.mp4"], ["infer", "--dataset_path", tmp_path]):
            line = refused([*command, "--model", paths[name], *flag], capsys, marker)
            if name == "model.onnx":
                assert "is named .onnx but is a zip archive" in line
            elif not trust:
                assert "without --trust-model" in line
            else:
                assert "refusing this pt2 archive" in line, line
    for name in ("pt2_named.ts", "layout.ts"):
        line = refused(["predict", "x.mp4", "--model", paths[name], *flag], capsys, marker)
        assert ("without --trust-model" in line) != trust, line
    assert checksums(paths["evil.pt"].parent) == before


def test_every_command_that_reads_a_checkpoint_refuses_them(crafted, tmp_path, capsys):
    paths, marker = crafted
    data = write_colour_dataset(tmp_path / "data", ["a", "b", "c"], {"train": 1})
    before = checksums(paths["evil.pt"].parent)
    out = tmp_path / "out"
    kinds = ("legacy_weights.pt2", "model.onnx", "pt2_named.ts", "layout.ts", "evil.pt", "evil.pth")
    for path in (paths[k] for k in kinds):
        commands = [
            ["predict", "x.mp4", "--checkpoint", path, *MODEL],
            ["eval", "--checkpoint", path, "--dataset_path", data, "--out", out, *MODEL],
            ["export", "--checkpoint", path, "--out", out / "m.onnx", *MODEL],
            ["convert", path, out / "w.safetensors"],
            ["check", "--weights", path, *MODEL],
        ]
        for key in ("finetune", "resume", "pre_res50"):
            commands.append(["train", "--dataset_path", data, "--output_dir", out, f"--{key}", path, *TRAIN])
        for args in commands:
            line = refused(args, capsys, marker)
            assert str(path) in line, line
    assert checksums(paths["evil.pt"].parent) == before
    assert not (out / "m.onnx").exists() and not (out / "w.safetensors").exists()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.tmp"))


def test_torch_advice_is_replaced_by_one_clause(crafted, tmp_path, capsys):
    paths, marker = crafted
    line = refused(["convert", paths["evil.pt"], tmp_path / "x.safetensors"], capsys, marker)
    assert "holds pickled Python objects, not only tensors (it calls io.open)" in line
    line = refused(["check", "--weights", paths["layout.ts"], *MODEL], capsys, marker)
    assert "is a TorchScript archive" in line


def test_a_genuine_export_needs_the_flag_and_then_loads(genuine, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", 12)
    for name in ("model.pt2", "model.ts"):
        line = refused(["predict", video, "--model", genuine / name], capsys, tmp_path / "none")
        assert "--trust-model" in line and "can run code" in line
        assert main(["predict", str(video), "--model", str(genuine / name), "--trust-model", "--json"]) == 0
        top = json.loads(capsys.readouterr().out)["top"]
        assert len(top) == 3 and {t["class"] for t in top} == {"a", "b", "c"}
    model, _ = tiny_model_and_info()
    clips = torch.randn(1, 3, 6, 32, 32)
    with torch.no_grad():
        expected = model(clips).numpy()
    for name in ("model.pt2", "model.ts"):
        assert abs(load_exported(genuine / name, trust=True)(clips.numpy()) - expected).max() < 1e-4


def test_the_name_decides_the_format_and_must_agree(genuine, tmp_path, capsys):
    cases = {
        "onnx_named.pt2": ("model.onnx", "is not a pt2 archive"),
        "pt2_named.onnx": ("model.pt2", "is named .onnx but is a zip archive"),
        "ts_named.pt2": ("model.ts", "is named .pt2 but is not a torch.export archive"),
        "onnx_named.ts": ("model.onnx", "is not a torchscript archive"),
        "model.bin": ("model.onnx", "cannot tell the format"),
    }
    for target, (source, message) in cases.items():
        shutil.copy(genuine / source, tmp_path / target)
        line = refused(
            ["predict", "x.mp4", "--model", tmp_path / target, "--trust-model"], capsys, tmp_path / "x"
        )
        assert message in line, line


def test_pt2_archive_checks(genuine, tmp_path):
    """What torch.export.save writes passes; an extra entry (e.g. AOTInductor code) does not."""
    data = (genuine / "model.pt2").read_bytes()
    root = zipfile.ZipFile(io.BytesIO(data)).namelist()[0].split("/")[0]
    for extra, message in (
        (f"{root}/data/aotinductor/model/model.so", "data/aotinductor/model/model.so"),
        (f"{root}/data/constants/model.pt", "data/constants/model.pt"),
        (f"{root}/data/constants/opaque_obj_0", "data/constants/opaque_obj_0"),
    ):
        path = tmp_path / "x.pt2"
        path.write_bytes(rezip(data, add={extra: b"\x80\x02N."}))
        with pytest.raises(UnsafeModelError, match=message):
            load_exported(path, trust=True)
    path.write_bytes(rezip(data, add={f"{root}/models/model.json": b"{}"}))  # an entry named twice
    with pytest.raises(UnsafeModelError, match="names an entry twice"):
        load_exported(path, trust=True)


# ----------------------------------------------------------------------------------------------------
# stnet export: outputs that are inputs, OS errors; stnet convert and check
# ----------------------------------------------------------------------------------------------------


def test_export_never_replaces_its_inputs(genuine, tmp_path, capsys):
    weights = tmp_path / "weights.safetensors"
    shutil.copy(genuine / "weights.safetensors", weights)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    data = write_colour_dataset(tmp_path / "data", ["a", "b", "c"], {"train": 1})
    before = checksums(tmp_path)
    base = ["export", "--checkpoint", weights, *MODEL, "--tolerance", "1"]
    cases = [
        [*base, "--out", weights, "--format", "onnx"],  # was: the checkpoint replaced by ONNX, exit 0
        [*base, "--out", names, "--format", "onnx", "--classes", names],
        [*base, "--out", data, "--format", "onnx", "--quantize", "int8", "--calibration", data],
    ]
    for args in cases:
        line = refused(args, capsys, tmp_path / "none")
        assert "is also an input" in line, line
    assert checksums(tmp_path) == before


def test_export_output_errors_are_one_line_and_leave_nothing(genuine, tmp_path, capsys, monkeypatch):
    weights = genuine / "weights.safetensors"
    base = ["export", "--checkpoint", weights, *MODEL, "--tolerance", "1"]
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    line = refused([*base, "--out", tmp_path / "file" / "m.onnx"], capsys, tmp_path / "none")
    assert "a part of the path is a file, not a folder writing" in line and "file/m.onnx" in line
    line = refused([*base, "--out", tmp_path / "folder.onnx"], capsys, tmp_path / "none")
    assert "it is a folder, not a file writing" in line
    # read-only output folder: chmod where it stops writes, else (root) the kernel's answer, EROFS
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    if os.access(readonly, os.W_OK):
        real_open = os.open

        def erofs(path, flags, *a, **k):
            if str(path).startswith(str(readonly)) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *a, **k)

        monkeypatch.setattr(os, "open", erofs)
    line = refused([*base, "--out", readonly / "m.onnx"], capsys, tmp_path / "none")
    assert f"writing {readonly / 'm.onnx'}" in line and ("read-only" in line or "permission denied" in line)
    monkeypatch.undo()
    readonly.chmod(0o755)
    assert not list(readonly.iterdir())


def fsync_fails_in(folder: Path, monkeypatch, code=errno.ENOSPC):
    """Make fsync of any file under ``folder`` fail with ``code`` (a full disk shows up there too)."""
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_export_and_convert_on_a_full_disk(genuine, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    fsync_fails_in(out, monkeypatch)
    args = ["export", "--checkpoint", genuine / "weights.safetensors", *MODEL, "--tolerance", "1"]
    line = refused([*args, "--out", out / "m.pt2"], capsys, tmp_path / "none")  # pt2: the quicker export
    assert line == f"stnet: error: no space left on device writing {out / 'm.pt2'}"
    line = refused(
        ["convert", genuine / "weights.safetensors", out / "w.safetensors"], capsys, tmp_path / "x"
    )
    assert line == f"stnet: error: no space left on device writing {out / 'w.safetensors'}"
    assert not list(out.iterdir())  # no temp file, no lock file, no half-written output


def test_convert_and_check_paths(genuine, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    shutil.copy(genuine / "weights.safetensors", weights)
    before = checksums(tmp_path)
    line = refused(["convert", weights, weights], capsys, tmp_path / "none")
    assert "is also an input" in line
    (tmp_path / "file").write_text("x")
    line = refused(["convert", weights, tmp_path / "file" / "w.safetensors"], capsys, tmp_path / "none")
    assert "a part of the path is a file, not a folder writing" in line
    (tmp_path / "dir.safetensors").mkdir()
    line = refused(["convert", weights, tmp_path / "dir.safetensors"], capsys, tmp_path / "none")
    assert "it is a folder, not a file writing" in line
    for bad in (tmp_path, tmp_path / "file" / "w.pth"):
        line = refused(["check", "--weights", bad, *MODEL], capsys, tmp_path / "none")
        assert "weight file not found" in line
    assert checksums(tmp_path) == {**before, str(tmp_path / "file"): hashlib.sha256(b"x").hexdigest()}


def test_export_lock_names_the_holder(genuine, tmp_path, capsys):
    from stnet.export import export_lock

    out = tmp_path / "m.onnx"
    with export_lock(out):
        args = ["export", "--checkpoint", genuine / "weights.safetensors", *MODEL, "--out", out]
        line = refused(args, capsys, tmp_path / "none")
        assert f"{out} is being written by another stnet export (PID {os.getpid()})" in line
        with export_lock(tmp_path / "other.onnx"):  # another target in the same folder is free
            pass
    assert not list(tmp_path.iterdir())  # the lock file goes with the lock


# ----------------------------------------------------------------------------------------------------
# train: the starting weights come from one place
# ----------------------------------------------------------------------------------------------------


def test_finetune_combinations_are_refused(tmp_path, capsys):
    for other, keep in (("--resume", "keep --resume"), ("--pre_res50", "keep --finetune")):
        args = ["train", "--dataset_path", tmp_path, "--finetune", "a.pt", other, "b.pt", *TRAIN]
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("stnet: error: ") and keep in err[0], err
    # resume auto continues the run when output_dir has one, and otherwise starts from --finetune
    assert load_config(None, ["--finetune", "a.pt", "--resume", "auto"]).finetune == "a.pt"
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["--finetune", "a.pt", "--pre_res50", "b.pth"])
    # a checkpoint's saved config says how that run started; using the checkpoint ignores it
    saved = {"finetune": "a.pt", "pre_res50": "b.pth", "resume": "c.pt", "lr": 0.5}
    cfg = load_config(None, [], base=saved)
    assert (cfg.finetune, cfg.pre_res50, cfg.resume, cfg.lr) == ("", "", "", 0.5)


def test_a_checkpoint_whose_config_does_not_describe_its_tensors_is_one_line(tmp_path, capsys):
    """An edited or crafted training checkpoint: its config says depth 34, its tensors are depth 18."""
    from dataclasses import asdict

    from stnet.checkpoint import save_checkpoint

    model, _ = tiny_model_and_info()
    config = asdict(load_config(None, MODEL))
    assert config["depth"] != 34
    config["depth"] = 34
    path = tmp_path / "edited.pt"
    save_checkpoint(path, {"config": config, "model": model.state_dict(), "epoch": 1, "step": 1})
    marker = tmp_path / "never"
    line = refused(["export", "--checkpoint", path, "--out", tmp_path / "m.onnx"], capsys, marker)
    assert "does not fit this model" in line and "depth 34" in line
    refused(["eval", "--checkpoint", path, "--dataset_path", tmp_path], capsys, marker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.pt"]
