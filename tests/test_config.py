from pathlib import Path

import pytest

from stnet.config import Config, ConfigError, load_config, parse_cli_overrides

REFERENCE_YAML = Path(__file__).parent / "fixtures" / "reference" / "default_config.yaml"
REPO_CONFIGS = Path(__file__).parents[1] / "configs"


def test_reference_default_config_loads_with_one_warning_line(capsys):
    cfg = load_config(REFERENCE_YAML)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("stnet: warning: ignoring reference-only keys")
    for key in ("mode", "dataset_sink_mode", "run_online", "data_url", "avgpool_kernel_size"):
        assert key in err[0]
    assert (cfg.class_num, cfg.T, cfg.N, cfg.batch_size, cfg.num_epochs) == (101, 7, 5, 16, 90)
    assert cfg.lr == 0.001 and cfg.momentum == 0.9 and cfg.weight_decay == 0.0001
    assert cfg.milestones == [40, 80]  # lr_decay_rate 40 over 90 epochs, the reference's effective schedule
    assert cfg.run_eval is False and cfg.checkpoint_path == "./ckpt" and cfg.summary_dir == "./summary"
    assert (cfg.eval_start_epoch, cfg.eval_interval, cfg.keep_checkpoint_max) == (40, 10, 5)


@pytest.mark.parametrize("name", ["ucf101", "kinetics400"])
def test_shipped_configs_hold_the_reference_recipes(name, capsys):
    by_name = load_config(name)
    by_path = load_config(REPO_CONFIGS / f"{name}.yaml")
    assert by_name == by_path
    assert capsys.readouterr().err == ""
    if name == "kinetics400":
        assert (by_name.class_num, by_name.target_size, by_name.short_size) == (400, 224, 256)
        assert (by_name.lr, by_name.milestones, by_name.num_epochs) == (0.01, [20, 40], 60)
    else:
        assert (by_name.class_num, by_name.target_size, by_name.short_size) == (101, 112, 128)
        assert (by_name.lr, by_name.milestones, by_name.num_epochs) == (0.001, [40, 80], 90)


def test_cli_overrides_are_typed():
    cfg = load_config(
        "ucf101",
        [
            "--lr",
            "1e-2",
            "--T=25",
            "--run_eval",
            "False",
            "--nesterov",
            "true",
            "--image_mean",
            "0.5,0.5,0.5",
            "--lr_milestones",
            "[10, 20]",
            "--num_classes",
            "51",
            "--dataset_path",
            "/data/x",
            "--dropout",
            "0.5",
        ],
    )
    assert cfg.lr == 0.01 and cfg.T == 25 and cfg.run_eval is False and cfg.nesterov is True
    assert cfg.image_mean == [0.5, 0.5, 0.5] and cfg.lr_milestones == [10, 20] and cfg.milestones == [10, 20]
    assert cfg.class_num == 51 and cfg.dataset_path == "/data/x" and cfg.dropout == 0.5
    assert isinstance(cfg.lr, float) and isinstance(cfg.T, int)


def test_override_order_and_milestone_keys():
    # a later lr_milestones replaces the reference's lr_decay_rate
    assert load_config(REFERENCE_YAML, {"lr_milestones": "30"}, warn=False).milestones == [30]
    assert load_config("ucf101", {"lr_decay_rate": 30}).milestones == [30, 60]
    assert load_config(None, {"num_epochs": 10, "lr_milestones": [], "lr_decay_rate": 0}).milestones == []


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--lrr", "0.1"], "unknown config key 'lrr'; did you mean 'lr'?"),
        (["--batchsize", "8"], "did you mean 'batch_size'?"),
        (["--xception", "dw"], "xception: 'dw' is not allowed; use one of depthwise, full"),
        (["--depth", "20"], "depth: 20 is not allowed; use one of 18, 34, 50, 101, 152"),
        (["--T", "0"], "T: 0 is out of range; it must be >= 1"),
        (["--T", "seven"], "T: 'seven' is not valid; use an integer"),
        (["--lr", "fast"], "lr: 'fast' is not valid; use a number"),
        (["--lr", "0"], "lr: 0.0 is out of range; it must be > 0"),
        (["--run_eval", "maybe"], "run_eval: 'maybe' is not valid; use true or false"),
        (["--image_mean", "0.5,x,0.5"], "image_mean: 'x' is not valid"),
        (["--image_std", "1,1"], "image_mean and image_std need exactly 3 values"),
        (["--target_size", "300"], "target_size 300 is larger than short_size 128"),
        (["--lr_milestones", "80,40"], "lr_milestones must be increasing"),
        (["--lr"], "--lr needs a value"),
        (["lr", "0.1"], "unexpected argument 'lr'"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config("ucf101", overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2:1: not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)
    bad.write_text("weight_decai: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'weight_decay'"):
        load_config(bad)


def test_negative_numbers_are_values_not_flags():
    assert parse_cli_overrides(["--seed", "-1"]) == {"seed": "-1"}
    with pytest.raises(ConfigError, match="seed: -1 is out of range"):
        load_config(None, ["--seed", "-1"])


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config("kinetics400", {"lr": 0.05, "image_std": [0.2, 0.2, 0.2], "resume": "auto"})
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_dataclass_validates_on_construction():
    with pytest.raises(ConfigError, match="precision"):
        Config(precision="fp8")
    assert Config().model_kwargs() == {
        "num_classes": 101,
        "T": 7,
        "N": 5,
        "depth": 50,
        "xception": "depthwise",
        "stem_pool": "symmetric",
        "dropout": 0.0,
    }
