"""Training configuration: TOML round trip, strict parsing, overrides, the LR schedule."""

from __future__ import annotations

import dataclasses
import itertools
import json
import tomllib

import pytest

from mbsnet.models import PRESETS, BSRNNConfig
from mbsnet.train.config import SECTIONS, ConfigError, TrainConfig, lr_at, model_config


def test_defaults_round_trip_through_toml_and_dict(tmp_path):
    cfg = TrainConfig.defaults()
    text = cfg.to_toml()
    assert TrainConfig.from_toml(text) == cfg
    path = tmp_path / "train.toml"
    path.write_text(text)
    assert TrainConfig.from_toml(path) == cfg
    assert TrainConfig.from_toml(str(path)) == cfg
    plain = json.loads(json.dumps(cfg.to_dict()))  # plain data, as stored in checkpoints
    assert TrainConfig.from_dict(plain) == cfg
    # Every field is written, each preceded by its help comment.
    doc = tomllib.loads(text)
    for name, cls in SECTIONS.items():
        assert set(doc[name]) == {f.name for f in dataclasses.fields(cls)}
    assert "# mixed precision: off or bf16 autocast (off | bf16)\namp = " in text
    assert cfg.loss.ri == 0.1 and cfg.loss.metric == 0.05 and cfg.train.clip_norm == 5.0


def test_non_default_values_round_trip():
    cfg = TrainConfig.defaults().apply_overrides(
        [
            'data.data_dir="/data/vb \\"demand\\" ü"',
            "data.speech_dirs=['a', 'b']",
            "data.snr_db=[0, 10]",  # ints accepted for floats
            "optim.lr=1e-6",
            "optim.min_lr=0",
            "train.amp=bf16",  # bare word for a string key
            "model.params.d_model=32",
            "model.params.bidirectional=false",
        ]
    )
    assert cfg.data.data_dir == '/data/vb "demand" ü' and cfg.data.snr_db == [0.0, 10.0]
    assert cfg.train.amp == "bf16" and cfg.optim.lr == 1e-6
    assert TrainConfig.from_toml(cfg.to_toml()) == cfg
    built = model_config(cfg.model)
    assert built == dataclasses.replace(PRESETS["base"], d_model=32, bidirectional=False)
    bsrnn = TrainConfig.from_toml('[model]\narch = "bsrnn"\npreset = ""\n')
    assert model_config(bsrnn.model) == BSRNNConfig()


def test_partial_file_takes_defaults():
    cfg = TrainConfig.from_toml("[train]\nbatch_size = 8\n")
    assert cfg.train.batch_size == 8
    assert dataclasses.replace(cfg.train, batch_size=4) == TrainConfig.defaults().train
    assert TrainConfig.from_toml("") == TrainConfig.defaults()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trainer]\nbatch_size = 8", "unknown section.*trainer"),
        ("[train]\nbatch = 8", r"unknown key.*\[train\].*batch"),
        ("[train]\nbatch_size = 8.0", "train.batch_size: expected int"),
        ("[train]\nbatch_size = true", "train.batch_size: expected int"),
        ("[train]\nactivation_checkpointing = 1", "train.activation_checkpointing: expected bool"),
        ('[optim]\nbetas = [0.9, "x"]', r"optim.betas\[1\]: expected float"),
        ('[train]\namp = "fp16"', "train.amp: 'fp16' is not one of off, bf16"),
        ("[train]\nbatch_size = 0", "train.batch_size: invalid"),
        ("[data]\nsnr_db = [10.0, 0.0]", "data.snr_db: invalid"),
        ("[data]\nnoise_focus_probability = 0.2", "data.noise_focus_probability: invalid"),
        ('[model]\narch = "unet"', "model.arch: unknown architecture"),
        ('[model]\narch = "bsrnn"', "model.preset"),
        ("[model.params]\nwidth = 3", "model.params: not fields of mbsnet: width"),
        ('[model.params]\nd_model = "64"', "model.params.d_model: expected int"),
        ("[train\n", "invalid TOML"),
    ],
)
def test_bad_files_name_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_toml(text)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size", "expected section.key=value"),
        ("trainer.batch_size=2", "'trainer.batch_size': unknown section"),
        ("train.batchsize=2", r"'train.batchsize': unknown key in \[train\]"),
        ("train.batch_size=two", "train.batch_size: 'two' is not a TOML value"),
        ("train.batch_size=1.5", "train.batch_size: expected int"),
        ("optim.schedule=linear", "optim.schedule: 'linear' is not one of cosine, step"),
        ("model.params.nope=1", "not fields of mbsnet: nope"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.defaults().apply_overrides([override])


def test_overrides_return_a_copy():
    cfg = TrainConfig.defaults()
    new = cfg.apply_overrides(["discriminator.enabled=false", "checkpoint.every_minutes=5"])
    assert new.discriminator.enabled is False and new.checkpoint.every_minutes == 5.0
    assert cfg == TrainConfig.defaults()


def test_lr_schedule_cosine():
    optim = TrainConfig.defaults().optim  # lr 5e-4, warm-up 1000, min_lr 1e-5
    total = 11_000
    assert lr_at(0, optim, total) == pytest.approx(5e-4 / 1000)
    assert lr_at(499, optim, total) == pytest.approx(2.5e-4)
    assert lr_at(999, optim, total) == pytest.approx(5e-4)
    assert lr_at(1000, optim, total) == pytest.approx(5e-4)
    assert lr_at(6000, optim, total) == pytest.approx((5e-4 + 1e-5) / 2)
    assert lr_at(total, optim, total) == pytest.approx(1e-5)
    assert lr_at(total + 500, optim, total) == pytest.approx(1e-5)
    after = [lr_at(s, optim, total) for s in range(1000, total + 1, 250)]
    assert all(a >= b for a, b in itertools.pairwise(after))
    # The discriminator's rate follows the same shape from its own peak.
    assert lr_at(0, optim, total, base_lr=1e-3) == pytest.approx(1e-6)
    assert lr_at(total, optim, total, base_lr=1e-3) == pytest.approx(2e-5)


def test_lr_schedule_step_and_no_warmup():
    cfg = TrainConfig.defaults().apply_overrides(
        ["optim.schedule=step", "optim.warmup_steps=0", "optim.step_every=100", "optim.lr=1e-3"]
    )
    optim = cfg.optim
    assert lr_at(0, optim, 1000) == pytest.approx(1e-3)
    assert lr_at(99, optim, 1000) == pytest.approx(1e-3)
    assert lr_at(100, optim, 1000) == pytest.approx(5e-4)
    assert lr_at(250, optim, 1000) == pytest.approx(2.5e-4)
    assert lr_at(10_000, optim, 1000) == pytest.approx(1e-5)  # floored at min_lr
