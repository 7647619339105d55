"""Issue 13 items 11 (YAML) and 12: every bad number or config file is one ``stnet: error:`` line, exit 2.

Before: ``--clips 0`` and ``stnet check --batch 0`` ended in tracebacks, ``--lr nan`` was accepted,
``--workers`` had no upper bound and a binary or non-UTF-8 YAML raised ``UnicodeDecodeError``.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from stnet.argtypes import MAX_WORKERS
from stnet.cli import main
from stnet.config import FIELDS, HINTS, load_config
from stnet.errors import ConfigError


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``stnet argv``; assert exit code 2 and exactly one ``stnet: error:`` line on stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("stnet: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "--checkpoint", "c.pt", "--clips", "0"], "eval: argument --clips: 0 is out of range"),
        (["infer", "--model", "m.onnx", "--dataset_path", "d", "--clips", "-1"], "it must be >= 1"),
        (["predict", "v.mp4", "--checkpoint", "c.pt", "--clips", "0"], "--clips: 0 is out of range"),
        (["predict", "v.mp4", "--checkpoint", "c.pt", "--topk", "0"], "--topk: 0 is out of range"),
        (["predict", "v.mp4", "--checkpoint", "c.pt", "--threads", "0"], "--threads: 0 is out"),
        (["predict", "v.mp4", "--checkpoint", "c.pt", "--clips", "two"], "'two' is not an integer"),
        (["check", "--batch", "0"], "check: argument --batch: 0 is out of range; it must be >= 1"),
        (["check", "--batch", "-3"], "--batch: -3 is out of range"),
        (["infer", "--model", "m.onnx", "--dataset_path", "d", "--batch", "0"], "--batch: 0 is out"),
        (["infer", "--model", "m.onnx", "--dataset_path", "d", "--workers", "-1"], "must be >= 0"),
        (
            ["infer", "--model", "m.onnx", "--dataset_path", "d", "--workers", "1000"],
            f"it must be <= {MAX_WORKERS} (more worker processes only cost memory",
        ),
        (["export", "--checkpoint", "c.pt", "--out", "m.onnx", "--T", "0"], "--T: 0 is out of range"),
        (["export", "--checkpoint", "c.pt", "--out", "m.onnx", "--size", "0"], "--size: 0 is out"),
        (["export", "--checkpoint", "c.pt", "--out", "m.onnx", "--tolerance", "nan"], "finite number"),
        (["export", "--checkpoint", "c.pt", "--out", "m.onnx", "--min_agreement", "2"], "must be <= 1"),
        (["export", "--checkpoint", "c.pt", "--out", "m.onnx", "--calibration_clips", "0"], "must be >= 1"),
        (["synth", "--out", "s", "--seed", "-1"], "synth: argument --seed: -1 is out of range"),
        (["synth", "--out", "s", "--workers", "65"], f"it must be <= {MAX_WORKERS}"),
        (["prepare", "list", "--root", "r", "--out", "o", "--workers", "100"], "prepare list: argument"),
        (["demo", "--seed", "-1"], "demo: argument --seed: -1 is out of range"),
        (["eval", "--checkpoint"], "expected one argument (see `stnet eval --help`)"),
        (["config", "--lr", "nan"], "lr: nan is out of range; it must be a finite number > 0"),
        (["config", "--workers", "1000"], f"workers: 1000 is out of range; it must be <= {MAX_WORKERS}"),
        (["config", "--seed", "99999999999999999999"], "it must be <= 4294967295"),
        (["check", "--depth", "18", "--T", "1"], "batch 1 x T 1 gives BatchNorm one value per channel"),
    ],
)
def test_bad_numbers_are_one_line_exit_2(capsys, argv, message):
    line = one_error_line(capsys, argv)
    assert message in line


FLOAT_KEYS = [name for name in FIELDS if float in (HINTS[name], *typing.get_args(HINTS[name]))]


@pytest.mark.parametrize("name", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_key_refuses_nan_and_infinity(name, value):
    raw = ",".join([value] * 3) if typing.get_origin(HINTS[name]) is list else value
    with pytest.raises(ConfigError, match=rf"^{name}: .* is out of range; it must be a finite number"):
        load_config(None, {name: raw})
    with pytest.raises(ConfigError, match="finite number"):  # YAML's .nan / .inf too
        load_config(None, {name: [float(value)] * 3 if "," in raw else float(value)})


def test_float_keys_found():
    assert {"lr", "momentum", "gamma", "dropout", "image_mean", "image_std"} <= set(FLOAT_KEYS)


def test_yaml_with_byte_order_mark_is_read(tmp_path: Path):
    path = tmp_path / "excel.yaml"
    path.write_bytes("\ufefflr: 0.05\nT: 3\n".encode())
    cfg = load_config(path)
    assert cfg.lr == 0.05 and cfg.T == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (bytes(range(256)) * 4, r"bin\.yaml is not UTF-8 text \(byte 0x80 at byte offset 128\)"),
        ("lr: 0.1\nname: caf\xe9\n".encode("latin-1"), r"not UTF-8 text \(byte 0xe9 at byte offset 17\)"),
        (b"lr: 0.1\nT: 3\x00\x01\n", r"bin\.yaml:2: not a YAML text file \(control character 0x00\)"),
        (b"\x7fELF\x02\x01\x01\x00", r"bin\.yaml:1: not a YAML text file"),
        (b"lr: 0.1\nT: 3\n  N: 2\n", r"bin\.yaml:3:4: not valid YAML: mapping values are not allowed"),
        (b"lr: 0.1\nT: [1,\nN: 2\n", r"bin\.yaml:4:1: .*flow sequence that starts at line 2"),
    ],
)
def test_bad_yaml_files_are_one_line_with_the_place(capsys, tmp_path: Path, content, message):
    path = tmp_path / "bin.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "\n" not in str(e.value)
    line = one_error_line(capsys, ["config", "--config", str(path)])
    assert str(e.value) in line
