import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import stnet
from reference_recipe import reference_params
from stnet.cli import main
from stnet.mindspore_ckpt import write_ckpt
from stnet.weights import read_weights


def test_console_script_help():
    exe = shutil.which("stnet", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "the `stnet` console script is installed with the package"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("version", "config", "convert", "check"):
        assert command in out


def test_python_dash_m(capsys):
    out = subprocess.run(
        [sys.executable, "-m", "stnet", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith(f"stnet {stnet.__version__} (torch {torch.__version__}, python ")


def test_config_prints_resolved_yaml(capsys):
    assert main(["config", "--config", "kinetics400", "--lr", "0.02", "--T=9"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.02 " in out and "T: 9 " in out and "class_num: 400 " in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--xception", "full", "--class_num", "400"], "48,878,288  (48.88 M)"),
        (["--class_num", "400"], "33,158,864  (33.16 M)"),
    ],
)
def test_model_summary_matches_the_reference_table(capsys, argv, expected):
    assert main(["config", "--model-summary", *argv]) == 0
    out = capsys.readouterr().out
    assert expected in out
    assert "temp1                      787,968" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["config", "--lrr", "1"], "stnet: error: unknown config key 'lrr'; did you mean 'lr'?"),
        (
            ["config", "--depth", "20"],
            "stnet: error: depth: 20 is not allowed; use one of 18, 34, 50, 101, 152",
        ),
        (
            ["config", "--config", "nope"],
            "stnet: error: config file not found: nope (built-in configs: hmdb51, kinetics400, ssv2, ucf101)",
        ),
    ],
)
def test_config_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == message


def test_convert_and_check_with_converted_weights(tmp_path, capsys):
    src = tmp_path / "stnet_ucf.ckpt"
    write_ckpt(src, reference_params())
    dst = tmp_path / "stnet_ucf.safetensors"
    assert main(["convert", str(src), str(dst)]) == 0
    assert "301 tensors (whole StNet weights)" in capsys.readouterr().out
    tensors, _ = read_weights(dst)
    np.testing.assert_array_equal(tensors["fc.bias"].numpy(), reference_params()["fc.bias"])
    argv = [
        "check",
        "--weights",
        str(dst),
        "--xception",
        "full",
        "--stem_pool",
        "same",
        "--batch",
        "1",
        "--T",
        "2",
        "--target_size",
        "64",
        "--short_size",
        "64",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "301 tensors loaded" in out and "check passed" in out


def test_convert_errors(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "out.safetensors")]) == 1
    assert "weight file not found" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "a.pth"), str(tmp_path / "out.pt")]) == 1
    assert "must be a .safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_check_refuses_weights_that_do_not_fit(tmp_path, capsys):
    src = tmp_path / "ref.ckpt"
    write_ckpt(src, reference_params())
    assert main(["check", "--weights", str(src), "--depth", "18"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stnet: error: ") and "does not fit this model" in err and err.count("\n") == 1
