"""The training loop on small in-memory clips: learning, schedule, weight decay, exact resume, checkpoints."""

import json
import random

import pytest
import torch
from torch.utils.data import Dataset

from stnet import checkpoint as ckpt_module
from stnet.checkpoint import CheckpointDir, load_checkpoint
from stnet.config import ConfigError, load_config
from stnet.distributed import DistInfo
from stnet.engine import fit, recompute_bn_stats, should_evaluate
from stnet.errors import OSFailure
from stnet.model import StNet
from stnet.optim import lr_at, parameter_groups

CLASSES = ["red", "green", "blue"]


class ColourClips(Dataset):
    """Clips whose class is the colour channel that is bright; random flips and noise as augmentation,
    drawn from Python's and torch's global generators (so resuming must restore them)."""

    def __init__(self, n, seed, T=2, N=1, size=32):
        g = torch.Generator().manual_seed(seed)
        self.labels = [i % 3 for i in range(n)]
        self.base = torch.rand(n, T, 3 * N, size, size, generator=g) * 0.5
        for i, y in enumerate(self.labels):
            self.base[i, :, y::3] += 1.0
        self.fetched = 0
        self.kill_at = None

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.fetched += 1
        if self.kill_at is not None and self.fetched == self.kill_at:
            raise KeyboardInterrupt("killed")
        x = self.base[i]
        if random.random() < 0.5:
            x = x.flip(-1)
        return x + 0.05 * torch.randn(x.shape), self.labels[i]


def tiny_config(tmp_path, **overrides):
    values = {
        "depth": 18,
        "class_num": 3,
        "T": 2,
        "N": 1,
        "target_size": 32,
        "short_size": 32,
        "batch_size": 4,
        "num_epochs": 3,
        "lr": 0.05,
        "lr_milestones": [2],
        "workers": 0,
        "precision": "fp32",
        "channels_last": False,
        "output_dir": str(tmp_path / "run"),
        "eval_start_epoch": 1,
        "deterministic": True,
    }
    values.update(overrides)
    return load_config(None, values)


def quiet(_msg):
    pass


def test_training_learns_an_easy_task_and_writes_its_outputs(tmp_path):
    # precise BN: without it the lagging running statistics leave this tiny run's eval accuracy to the seed
    cfg = tiny_config(tmp_path, num_epochs=6, lr_milestones=[4], lr=0.003, channels_last=True, precise_bn=6)
    run = fit(cfg, ColourClips(24, 0), ColourClips(9, 1), CLASSES, log=quiet)
    assert run.epoch == 6 and run.step == 6 * 6
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.best_top1 >= 0.9 and run.history[-1]["val_videos"] == 9
    out = tmp_path / "run"
    for name in ("metrics.jsonl", "curves.png", "config.yaml", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5, 6]
    assert all(r["precise_bn_batches"] == 6 for r in lines)
    assert list((out / "tensorboard").iterdir()), "TensorBoard events are written"
    state = load_checkpoint(out / "checkpoints" / "best.pt")
    assert state["epoch"] == run.best_epoch and state["best_top1"] == run.best_top1


def test_lr_per_epoch_follows_the_configured_schedule_exactly(tmp_path):
    cfg = tiny_config(tmp_path, num_epochs=5, lr=0.1, lr_milestones=[2, 4], gamma=0.5, run_eval=False)
    run = fit(cfg, ColourClips(8, 0), None, CLASSES, log=quiet)
    assert [r["lr"] for r in run.history] == [0.1, 0.1, 0.05, 0.05, 0.025]


def test_schedule_shapes():
    cfg = load_config(None, {"num_epochs": 10, "lr_milestones": [3, 6], "warmup_epochs": 2})
    # warm-up: linear per step, reaching the base lr at the end of epoch 2
    assert [lr_at(cfg, 1.0, 0, s, 4) for s in range(4)] == [0.125, 0.25, 0.375, 0.5]
    assert lr_at(cfg, 1.0, 1, 3, 4) == 1.0
    assert [lr_at(cfg, 1.0, e) for e in range(2, 10)] == pytest.approx(
        [1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01]
    )
    cos = load_config(None, {"num_epochs": 4, "lr_schedule": "cosine"})
    assert [lr_at(cos, 1.0, e) for e in range(4)] == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)
    kinetics = load_config("kinetics400")  # 0.01, ×0.1 after epochs 20 and 40
    assert [lr_at(kinetics, 0.01, e) for e in (0, 19, 20, 39, 40, 59)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]
    )


def test_weight_decay_skips_batchnorm_weights_and_biases():
    model = StNet(num_classes=3, T=2, N=1, depth=18)
    decay, no_decay = parameter_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    for name, p in model.named_parameters():
        is_bn = ".bn" in name or name.startswith("bn1") or "downsample.1" in name
        assert (id(p) in ids) == is_bn, name
    assert any(p is model.temp1.conv1.bias for p in decay["params"])  # conv biases are decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("precise_bn", [0, 2])
def test_a_killed_run_resumed_ends_with_the_same_weights(tmp_path, precise_bn):
    cfg = tiny_config(tmp_path / "a", precise_bn=precise_bn)
    full = fit(cfg, ColourClips(16, 0), ColourClips(6, 1), CLASSES, log=quiet)
    reference = load_checkpoint(tmp_path / "a" / "run" / "checkpoints" / "last.pt")

    cfg = tiny_config(tmp_path / "b", precise_bn=precise_bn)
    train = ColourClips(16, 0)
    # in the middle of the second epoch, between two steps (after precise BN's batches of 4 clips)
    train.kill_at = 16 + 4 * precise_bn + 6
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, train, ColourClips(6, 1), CLASSES, log=quiet)
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "last.pt")["epoch"] == 1
    resumed = fit(
        tiny_config(tmp_path / "b", resume="auto", precise_bn=precise_bn),
        ColourClips(16, 0),
        ColourClips(6, 1),
        CLASSES,
        log=quiet,
    )
    final = load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / "last.pt")
    assert resumed.epoch == full.epoch == 3 and resumed.step == full.step
    for name, value in reference["model"].items():
        assert torch.equal(value, final["model"][name]), name
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert [r["val_top1"] for r in resumed.history] == [r["val_top1"] for r in full.history]
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_precise_bn_sets_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    model = StNet(num_classes=3, T=2, N=1, depth=18)
    model.train()
    batches = [(torch.randn(2, 2, 3, 32, 32) * (1 + i), torch.zeros(2, dtype=torch.long)) for i in range(4)]
    params = {k: v.clone() for k, v in model.named_parameters()}
    model.eval()  # restored afterwards

    used = recompute_bn_stats(model, batches, 3, device=torch.device("cpu"), dist=DistInfo())

    assert used == 3 and not model.training
    with torch.no_grad():  # the stem's BatchNorm sees conv1 of the (B*T) frames
        stem = [model.conv1(x.reshape(4, 3, 32, 32)) for x, _ in batches[:3]]
    mean = torch.stack([y.mean(dim=(0, 2, 3)) for y in stem]).mean(0)
    var = torch.stack([y.transpose(0, 1).flatten(1).var(dim=1) for y in stem]).mean(0)  # unbiased
    torch.testing.assert_close(model.bn1.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.bn1.running_var, var, rtol=1e-4, atol=1e-5)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(torch.equal(v, params[k]) for k, v in model.named_parameters())


def test_precise_bn_and_freeze_bn_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match=r"precise_bn .* freeze_bn"):
        tiny_config(tmp_path, precise_bn=10, freeze_bn=True)


def test_resume_refuses_another_architecture(tmp_path):
    fit(tiny_config(tmp_path, num_epochs=1, run_eval=False), ColourClips(8, 0), None, CLASSES, log=quiet)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    cfg = tiny_config(tmp_path, num_epochs=2, depth=34, resume=str(last), run_eval=False)
    with pytest.raises(ValueError, match=r"another model \(depth 18 → 34\); use --finetune"):
        fit(cfg, ColourClips(8, 0), None, CLASSES, log=quiet)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt_module.save_checkpoint(path, {"epoch": 1, "model": {"w": torch.ones(3)}})

    def crash(obj, f):
        f.write(b"PK\x03\x04half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", crash)
    with pytest.raises(OSFailure, match=f"^disk full writing {path}$"):  # the user's path, not the temp file
        ckpt_module.save_checkpoint(path, {"epoch": 2, "model": {"w": torch.zeros(3)}})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no temporary file is left behind"


def test_periodic_checkpoints_keep_the_newest(tmp_path):
    ckpts = CheckpointDir(tmp_path, keep=2)
    for epoch in (1, 2, 3, 10):
        ckpts.save_periodic(epoch, {"epoch": epoch})
    assert [p.name for p in ckpts.periodic()] == ["stnet-0003.pt", "stnet-0010.pt"]


def test_eval_epochs():
    cfg = load_config(None, {"num_epochs": 90, "eval_start_epoch": 40, "eval_interval": 10})
    assert [e for e in range(1, 91) if should_evaluate(cfg, e)] == [40, 50, 60, 70, 80, 90]
    cfg = load_config(None, {"num_epochs": 25, "eval_start_epoch": 10, "eval_interval": 10})
    assert [e for e in range(1, 26) if should_evaluate(cfg, e)] == [10, 20, 25]


def test_bf16_autocast_trains_and_keeps_batchnorm_statistics_fp32(tmp_path):
    lines = []
    cfg = tiny_config(tmp_path, num_epochs=1, precision="bf16", channels_last=True, run_eval=False)
    fit(cfg, ColourClips(8, 0), None, CLASSES, log=lines.append)
    assert "precision bfloat16" in lines[0]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["model"]["bn1.running_var"].dtype == torch.float32
    assert state["model"]["conv1.weight"].dtype == torch.float32
    assert torch.isfinite(torch.tensor(state["history"][0]["train_loss"]))


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """With BatchNorm on running statistics, 2 accumulated batches of 4 make the same step as one of 8."""
    common = {"num_epochs": 1, "run_eval": False, "freeze_bn": True, "clip_grad_norm": 100.0}
    fit(tiny_config(tmp_path / "big", batch_size=8, **common), ColourClips(16, 0), None, CLASSES, log=quiet)
    fit(
        tiny_config(tmp_path / "acc", batch_size=4, accumulate_steps=2, **common),
        ColourClips(16, 0),
        None,
        CLASSES,
        log=quiet,
    )
    big = load_checkpoint(tmp_path / "big" / "run" / "checkpoints" / "last.pt")
    acc = load_checkpoint(tmp_path / "acc" / "run" / "checkpoints" / "last.pt")
    assert big["step"] == acc["step"] == 2
    for name, value in big["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(acc["model"][name], value, atol=1e-5, rtol=1e-4, msg=name)
