"""torchrun with 2 CPU processes (gloo): same weights on every rank, equal to one process with the same
global batch, exact resume, and evaluation that counts every val video once."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_stnet, tiny_argv
from stnet.checkpoint import load_checkpoint
from stnet.clipstore import write_clip

pytestmark = pytest.mark.slow  # torchrun end to end

# batch statistics couple the clips of a batch, so 1 x 8 and 2 x 4 clips only compute the same gradient
# when BatchNorm uses its running statistics (freeze_bn)
COMMON = [
    *tiny_argv(short_size=32, batch_size=None, channels_last=None, lr=0.01, deterministic=True),
    *["--eval_start_epoch", "1", "--num_epochs", "2", "--freeze_bn", "true"],
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 clip-store files of random frames (train) and 5 (val)."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    for v in range(8):
        jpegs = []
        for _ in range(12):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, size=(32, 32, 3), dtype=np.uint8)).save(
                buffer, format="JPEG"
            )
            jpegs.append(buffer.getvalue())
        write_clip(root / f"v{v}.stclip", jpegs, (32, 32))
    (root / "train.txt").write_text("".join(f"v{i}.stclip {i % 3}\n" for i in range(8)))
    (root / "val.txt").write_text("".join(f"v{i}.stclip {i % 3}\n" for i in range(5)))
    return root


def run(args, nproc=None):
    done = run_stnet(*args, nproc=nproc)
    return done.stdout + done.stderr  # the log lines are on stderr


def weights(out):
    return load_checkpoint(out / "checkpoints" / "last.pt")


@pytest.fixture(scope="module")
def runs(dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    single = run(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(base / "single"),
            "--batch_size",
            "8",
            *COMMON,
        ]
    )
    ddp = run(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(base / "ddp"),
            "--batch_size",
            "4",
            *COMMON,
        ],
        nproc=2,
    )
    return base, single, ddp


def test_two_processes_end_identical_and_match_one_process(runs):
    base, _single, ddp = runs
    assert "× 2 processes" in ddp
    # channels-last (the default): the gradients must have their DDP buckets' strides
    assert "Grad strides do not match bucket view strides" not in ddp
    assert "parameters and BatchNorm statistics identical on all 2 processes" in ddp
    one, two = weights(base / "single"), weights(base / "ddp")
    assert one["step"] == two["step"] == 2
    for name, value in one["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(two["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert two["history"][-1]["val_videos"] == 5, "each val video counted once over both processes"
    assert two["history"][-1]["val_top1"] == one["history"][-1]["val_top1"]
    assert abs(two["history"][-1]["train_loss"] - one["history"][-1]["train_loss"]) < 1e-5


def test_accumulation_under_ddp_equals_one_process_with_the_global_batch(runs, dataset, tmp_path):
    """2 processes × batch 2 × 2 accumulated micro-batches make the same steps as 1 process × batch 8: a
    micro-batch that does not end its group runs forward and backward in one ``no_sync`` context."""
    base, _single, _ddp = runs
    text = run(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(tmp_path),
            "--batch_size",
            "2",
            "--accumulate_steps",
            "2",
            *COMMON,
        ],
        nproc=2,
    )
    assert "parameters and BatchNorm statistics identical on all 2 processes" in text
    assert "Grad strides do not match bucket view strides" not in text
    one, accumulated = weights(base / "single"), weights(tmp_path)
    assert one["step"] == accumulated["step"] == 2
    for name, value in one["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(accumulated["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)
    assert abs(accumulated["history"][-1]["train_loss"] - one["history"][-1]["train_loss"]) < 1e-5


def test_two_processes_resumed_equal_uninterrupted(runs, dataset):
    base, _, _ = runs
    out = base / "resumed"
    run(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(out),
            "--batch_size",
            "4",
            *COMMON,
            "--num_epochs",
            "1",
        ],
        nproc=2,
    )
    text = run(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(out),
            "--batch_size",
            "4",
            *COMMON,
            "--resume",
            "auto",
        ],
        nproc=2,
    )
    assert "resumed from" in text
    resumed, uninterrupted = weights(out), weights(base / "ddp")
    for name, value in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], value), name


@pytest.mark.parametrize("extra", [["--run_eval", "false"], ["--precise_bn", "1"]])
def test_batchnorm_statistics_are_averaged_over_the_processes(dataset, tmp_path, extra):
    """Without freeze_bn each process updates BatchNorm statistics from its own clips; every epoch ends
    by averaging them (and precise BN averages what it recomputes), so rank 0 saves the average and the
    processes agree; the run itself fails if they differ. Without validation nothing else (DDP's buffer
    broadcast at the next forward) would make them agree."""
    text = run(
        [
            "train",
            "--dataset_path",
            str(dataset),
            "--output_dir",
            str(tmp_path),
            "--batch_size",
            "4",
            *COMMON[: COMMON.index("--num_epochs")],  # without the epochs and freeze_bn
            "--num_epochs",
            "1",
            *extra,
        ],
        nproc=2,
    )
    assert "parameters and BatchNorm statistics identical on all 2 processes" in text
    record = weights(tmp_path)["history"][-1]
    assert record.get("precise_bn_batches", 0) == (1 if "--precise_bn" in extra else 0)
