"""Training configuration: dataclass sections, TOML in and out, overrides, the LR schedule.

Every default lives in the field definitions below, each with a one-line help text that
`TrainConfig.to_toml` writes as a comment. A TOML file may set any subset of keys; unknown
sections or keys, wrong types and invalid values raise `ConfigError` naming the key.
Sentinels instead of null (TOML has none): 0 means "off" or "derived" where the help says so.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mbsnet import SAMPLE_RATE
from mbsnet.train._toml import ConfigError, check_type, parse_literal, toml_value

SPEECH_SAMPLING = ("file", "duration")
"""Ways the mixing train set gives speech files their mixtures per epoch (`MixingTrainSet`)."""


def _meta(help: str, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field metadata: the help text written to TOML and the allowed values, if restricted."""
    return {"help": help, "choices": choices}


def _f(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """An immutable-default field with its metadata (lists and dicts use `field` directly)."""
    return field(default=default, metadata=_meta(help, choices))


@dataclass
class ModelSection:
    """The enhancer to train."""

    arch: str = _f("mbsnet", "registry name of the architecture (mbsnet.models.ARCHS)")
    preset: str = _f("base", 'mbsnet preset (mbsnet.models.PRESETS); "" for the arch defaults')
    params: dict[str, Any] = field(
        default_factory=dict, metadata=_meta("explicit config fields applied on top of the preset")
    )
    init: str = _f(
        "", 'start from this checkpoint\'s weights ("default": the bundled model); its arch and '
        "config replace the other model settings; fresh optimizer and schedule",
    )  # fmt: skip


@dataclass
class DataSection:
    """Training data (mbsnet.train.data / mbsnet.train.mixing) and its augmentation."""

    mode: str = _f(
        "paired", "paired: pre-mixed pairs; mixing: speech + noise", ("paired", "mixing")
    )
    data_dir: str = _f("", "paired: folder with train/ and valid/ (or test/), each clean/ + noisy/")
    resample: bool = _f(False, "paired: resample files not at 16 kHz instead of rejecting them")
    speech_dirs: list[str] = field(
        default_factory=list, metadata=_meta("mixing: folders of clean training speech")
    )
    noise_dirs: list[str] = field(
        default_factory=list, metadata=_meta("mixing: folders of training noise")
    )
    rir_dirs: list[str] = field(
        default_factory=list,
        metadata=_meta("mixing: folders of room impulse responses (may be empty)"),
    )
    valid_speech_dirs: list[str] = field(
        default_factory=list, metadata=_meta("mixing: folders of held-out validation speech")
    )
    valid_noise_dirs: list[str] = field(
        default_factory=list, metadata=_meta("mixing: folders of held-out validation noise")
    )
    valid_holdout: float = _f(
        0.05,
        "mixing, when a valid_*_dirs list is empty: share of those training files held out "
        "for validation instead (chosen by file name, at least one)",
    )
    segment_seconds: float = _f(2.0, "training segment length; shorter files are zero-padded")
    speech_sampling: str = _f(
        "file",
        "mixing: training mixtures per epoch, one per speech file, or one per segment length "
        "of its audio (long files drawn more often)",
        SPEECH_SAMPLING,
    )
    snr_db: list[float] = field(
        default_factory=lambda: [-5.0, 15.0], metadata=_meta("mixing: SNR range [low, high], dB")
    )
    rir_probability: float = _f(0.3, "mixing: probability of reverberating the speech")
    level_dbfs: list[float] = field(
        default_factory=lambda: [-35.0, -15.0],
        metadata=_meta("mixing: mixture level range [low, high], dBFS"),
    )
    eq_probability: float = _f(
        0.0, "mixing: probability of a random EQ (the same on the noisy input and the target)"
    )
    eq_db: float = _f(6.0, "mixing: the EQ's largest boost or cut, dB")
    noise_tilt_probability: float = _f(
        0.0, "mixing: probability of a random spectral tilt of the noise alone (before the SNR)"
    )
    noise_tilt_db_per_octave: list[float] = field(
        default_factory=lambda: [-9.0, 3.0],
        metadata=_meta("mixing: range of that tilt [low, high], dB per octave around 1 kHz"),
    )
    noiseless_probability: float = _f(
        0.0, "mixing: probability of an item without noise (the model learns to pass clean input)"
    )
    noise_lowpass_probability: float = _f(
        0.0, "mixing: probability of low-passing the noise alone (before the SNR)"
    )
    noise_lowpass_hz: list[float] = field(
        default_factory=lambda: [100.0, 2000.0],
        metadata=_meta("mixing: range of that low-pass's cutoff [low, high], Hz (log-uniform)"),
    )
    noise_focus_glob: str = _f(
        "", "mixing, training only: file-name pattern (fnmatch) of noise to draw more often"
    )
    noise_focus_probability: float = _f(
        0.0, "mixing, training only: probability of drawing the noise from those files"
    )


@dataclass
class ValidationSection:
    """Validation during training."""

    mode: str = _f("full", "paired: whole files, or fixed-length cuts", ("full", "cuts"))
    cut_seconds: float = _f(4.0, "cuts mode, and the length of mixing-mode validation items")
    cuts_per_file: int = _f(1, "cuts mode: excerpts per file")
    mixing_items: int = _f(50, "mixing: number of fixed validation mixtures")
    mixing_seed: int = _f(1234, "mixing: seed of the validation mixtures")
    every_steps: int = _f(0, "validate every N optimizer steps; 0: at the end of each epoch")
    pesq_workers: int = _f(2, "PESQ worker processes of validation; 0: in the training process")


@dataclass
class OptimSection:
    """AdamW and the learning-rate schedule (a pure function of the step: `lr_at`)."""

    lr: float = _f(5e-4, "peak learning rate of the enhancer")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=_meta("AdamW betas"))
    weight_decay: float = _f(0.01, "AdamW decoupled weight decay")
    warmup_steps: int = _f(1000, "linear warm-up length in optimizer steps")
    schedule: str = _f(
        "cosine", "after warm-up: cosine to min_lr, or step decay", ("cosine", "step")
    )
    min_lr: float = _f(1e-5, "floor of both schedules (reached at the last step by cosine)")
    step_gamma: float = _f(0.5, "step schedule: factor applied every step_every steps")
    step_every: int = _f(30000, "step schedule: steps between decays, counted after warm-up")


@dataclass
class LossSection:
    """Generator loss (mbsnet.train.losses): weights and compression."""

    ri: float = _f(0.1, "weight of the compressed real/imag spectrum term")
    mag: float = _f(0.9, "weight of the compressed magnitude term")
    time: float = _f(0.2, "weight of the waveform L1 term")
    metric: float = _f(0.05, "weight of the metric-GAN term (used when the discriminator is on)")
    compress_power: float = _f(0.3, "magnitude compression exponent")
    distance: str = _f("l1", "distance of the ri and mag terms (CMGAN used mse)", ("l1", "mse"))


@dataclass
class DiscriminatorSection:
    """Metric discriminator (MetricGAN-style PESQ predictor)."""

    enabled: bool = _f(True, "train with the metric discriminator and its loss term")
    ndf: int = _f(16, "width of the first conv block (doubles per block)")
    lr: float = _f(1e-3, "peak learning rate (follows the enhancer's schedule shape)")
    pesq_workers: int = _f(2, "PESQ worker processes; 0: in the training process")


@dataclass
class TrainSection:
    """Batching, length, numerics and reproducibility."""

    batch_size: int = _f(4, "segments per optimizer micro-batch (per process)")
    grad_accum: int = _f(1, "micro-batches per optimizer step")
    max_steps: int = _f(0, "optimizer steps to train; 0: derived from epochs")
    epochs: int = _f(100, "passes over the training data (when max_steps is 0)")
    clip_norm: float = _f(5.0, "gradient norm clipping; 0: off")
    max_consecutive_nonfinite: int = _f(10, "abort after this many non-finite steps in a row")
    amp: str = _f("off", "mixed precision: off or bf16 autocast", ("off", "bf16"))
    activation_checkpointing: bool = _f(False, "recompute encoder activations in backward")
    recompute_mamba: bool = _f(
        True, "recompute each Mamba layer's conv, scan and norm in backward (less memory, slower)"
    )
    compile: bool = _f(
        False, "torch.compile the generator for training steps (fused kernels; compiles ~1-2 min)"
    )
    keep_freed_memory: bool = _f(
        True, "glibc: keep freed memory for the next step (fewer page faults; mbsnet.allocator)"
    )
    seed: int = _f(0, "seed of torch, numpy and the data order")
    num_workers: int = _f(2, "data loader worker processes")
    log_every_steps: int = _f(50, "steps between training log lines")


@dataclass
class CheckpointSection:
    """When to write checkpoints."""

    every_steps: int = _f(1000, "write the latest checkpoint every N steps; 0: off")
    every_minutes: float = _f(30.0, "also every N minutes of training; 0: off")
    keep_epochs: int = _f(3, "epoch-end checkpoints kept (newest); 0: keep all")


@dataclass
class EarlyStoppingSection:
    """Stop when validation PESQ stops improving."""

    patience: int = _f(10, "validations without improvement before stopping; 0: off")
    min_delta: float = _f(0.01, "smallest PESQ gain counted as an improvement")


OVERFIT_SETTINGS = (
    "train.max_steps=4000",
    "train.batch_size=2",
    "train.num_workers=0",
    "optim.lr=1.5e-3",
    "optim.min_lr=1e-4",
    "optim.warmup_steps=50",
    "discriminator.enabled=false",
    "validation.every_steps=100",
    "checkpoint.every_steps=500",
    "early_stopping.patience=0",
)
"""`mbsnet train --overfit N` applies these before the user's --set overrides. A few pairs
make epochs of a few steps, so the run is counted in steps and validated every 100 of them,
at a higher rate than the full recipe's, generator only (the question is whether the
generator can fit the pairs), and with the data loaded in-process (a DataLoader's workers
would restart every few steps). On the 6 VoiceBank pairs of vbd_train6 it takes PESQ from
1.41 to 3.40 (README)."""

SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "validation": ValidationSection,
    "optim": OptimSection,
    "loss": LossSection,
    "discriminator": DiscriminatorSection,
    "train": TrainSection,
    "checkpoint": CheckpointSection,
    "early_stopping": EarlyStoppingSection,
}


def _section_from_dict(name: str, data: Any) -> Any:
    cls = SECTIONS[name]
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: expected a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{name}]: {', '.join(unknown)}")
    values = {k: check_type(v, hints[k], f"{name}.{k}") for k, v in data.items()}
    return cls(**values)


def _model_config_class(arch: str) -> type:
    from mbsnet.models import ARCHS  # deferred: the model zoo imports torch

    if arch not in ARCHS:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch][1]


def _validate_model(model: ModelSection) -> None:
    from mbsnet.models import PRESETS

    config_cls = _model_config_class(model.arch)
    if model.preset and (model.arch != "mbsnet" or model.preset not in PRESETS):
        raise ConfigError(
            f"model.preset: {model.preset!r} is not a preset of {model.arch!r} "
            f'(mbsnet presets: {", ".join(PRESETS)}; use "" for none)'
        )
    hints = typing.get_type_hints(config_cls)
    unknown = sorted(set(model.params) - set(hints))
    if unknown:
        raise ConfigError(f"model.params: not fields of {model.arch}: {', '.join(unknown)}")
    for key, value in model.params.items():
        model.params[key] = check_type(value, hints[key], f"model.params.{key}")


def model_config(model: ModelSection) -> Any:
    """The architecture's config dataclass: the preset (or defaults) with `params` applied."""
    from mbsnet.models import preset_config

    _validate_model(model)
    config_cls = _model_config_class(model.arch)
    base = preset_config(model.preset) if model.preset else config_cls()
    return dataclasses.replace(base, **model.params)


def _is_range(pair: list[float]) -> bool:
    return len(pair) == 2 and pair[0] <= pair[1]


def _validate(cfg: TrainConfig) -> None:
    """Choices and value ranges; raises ConfigError naming the key."""
    for name in SECTIONS:
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            choices = f.metadata.get("choices")
            if choices and getattr(section, f.name) not in choices:
                value = getattr(section, f.name)
                raise ConfigError(f"{name}.{f.name}: {value!r} is not one of {', '.join(choices)}")
    _validate_model(cfg.model)
    checks = {
        "data.segment_seconds": cfg.data.segment_seconds > 0,
        "data.snr_db": _is_range(cfg.data.snr_db),
        "data.level_dbfs": _is_range(cfg.data.level_dbfs),
        "data.rir_probability": 0.0 <= cfg.data.rir_probability <= 1.0,
        "data.eq_probability": 0.0 <= cfg.data.eq_probability <= 1.0,
        "data.eq_db": 0.0 <= cfg.data.eq_db <= 24.0,
        "data.noise_tilt_probability": 0.0 <= cfg.data.noise_tilt_probability <= 1.0,
        "data.noise_tilt_db_per_octave": _is_range(cfg.data.noise_tilt_db_per_octave)
        and max(map(abs, cfg.data.noise_tilt_db_per_octave)) <= 24.0,
        "data.noiseless_probability": 0.0 <= cfg.data.noiseless_probability <= 1.0,
        "data.noise_lowpass_probability": 0.0 <= cfg.data.noise_lowpass_probability <= 1.0,
        "data.noise_lowpass_hz": _is_range(cfg.data.noise_lowpass_hz)
        and cfg.data.noise_lowpass_hz[0] > 0.0
        and cfg.data.noise_lowpass_hz[1] < SAMPLE_RATE / 2,
        "data.noise_focus_probability": 0.0 <= cfg.data.noise_focus_probability <= 1.0
        and (cfg.data.noise_focus_probability == 0.0 or cfg.data.noise_focus_glob != ""),
        "data.valid_holdout": 0.0 < cfg.data.valid_holdout < 1.0,
        "validation.mixing_items": cfg.validation.mixing_items >= 1,
        "validation.every_steps": cfg.validation.every_steps >= 0,
        "validation.pesq_workers": cfg.validation.pesq_workers >= 0,
        "validation.cut_seconds": cfg.validation.cut_seconds > 0,
        "validation.cuts_per_file": cfg.validation.cuts_per_file >= 1,
        "optim.lr": cfg.optim.lr > 0,
        "optim.betas": len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
        "optim.weight_decay": cfg.optim.weight_decay >= 0,
        "optim.warmup_steps": cfg.optim.warmup_steps >= 0,
        "optim.min_lr": 0 <= cfg.optim.min_lr <= cfg.optim.lr,
        "optim.step_gamma": 0 < cfg.optim.step_gamma <= 1,
        "optim.step_every": cfg.optim.step_every >= 1,
        "loss.compress_power": 0 < cfg.loss.compress_power <= 1,
        "discriminator.ndf": cfg.discriminator.ndf >= 1,
        "discriminator.lr": cfg.discriminator.lr > 0,
        "discriminator.pesq_workers": cfg.discriminator.pesq_workers >= 0,
        "train.batch_size": cfg.train.batch_size >= 1,
        "train.grad_accum": cfg.train.grad_accum >= 1,
        "train.max_steps": cfg.train.max_steps >= 0,
        "train.epochs": cfg.train.epochs >= 1 or cfg.train.max_steps > 0,
        "train.clip_norm": cfg.train.clip_norm >= 0,
        "train.max_consecutive_nonfinite": cfg.train.max_consecutive_nonfinite >= 1,
        "checkpoint.every_steps": cfg.checkpoint.every_steps >= 0,
        "checkpoint.every_minutes": cfg.checkpoint.every_minutes >= 0,
        "checkpoint.keep_epochs": cfg.checkpoint.keep_epochs >= 0,
        "early_stopping.patience": cfg.early_stopping.patience >= 0,
        "early_stopping.min_delta": cfg.early_stopping.min_delta >= 0,
    }
    for key, ok in checks.items():
        if not ok:
            section, name = key.split(".")
            raise ConfigError(f"{key}: invalid value {getattr(getattr(cfg, section), name)!r}")
    for weight in ("ri", "mag", "time", "metric"):
        if getattr(cfg.loss, weight) < 0:
            raise ConfigError(f"loss.{weight}: weights must be >= 0")


@dataclass
class TrainConfig:
    """The whole training configuration, one dataclass per TOML section."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    discriminator: DiscriminatorSection = field(default_factory=DiscriminatorSection)
    train: TrainSection = field(default_factory=TrainSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    early_stopping: EarlyStoppingSection = field(default_factory=EarlyStoppingSection)

    @classmethod
    def defaults(cls) -> TrainConfig:
        """The recipe's defaults (every field's default above)."""
        return cls()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dicts/lists of primitives (for checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Strict inverse of `to_dict`; missing sections and keys take their defaults."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a table of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown section(s): {', '.join(unknown)}")
        cfg = cls(**{name: _section_from_dict(name, section) for name, section in data.items()})
        _validate(cfg)
        return cfg

    def to_toml(self) -> str:
        """The configuration as TOML, every key present, with its help text as a comment."""
        lines = [
            "# mbsnet training configuration. Any key may be left out: it takes the",
            "# default.",
        ]
        for name in SECTIONS:
            section = getattr(self, name)
            lines += ["", f"[{name}]", f"# {type(section).__doc__}"]
            tables = []
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                choices = f.metadata["choices"]
                help_text = f.metadata["help"] + (f" ({' | '.join(choices)})" if choices else "")
                if isinstance(value, dict):
                    tables.append((f.name, value, help_text))
                    continue
                lines += [f"# {help_text}", f"{f.name} = {toml_value(value)}"]
            for key, table, help_text in tables:
                lines += ["", f"[{name}.{key}]", f"# {help_text}"]
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, source: str | os.PathLike[str]) -> TrainConfig:
        """Parse TOML text, or a file: a path-like, or a str with no '=' or newline."""
        if isinstance(source, os.PathLike) or (
            "=" not in source and "\n" not in source and source.strip()
        ):
            text = Path(source).read_text(encoding="utf-8")
        else:
            text = source
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}") from exc
        return cls.from_dict(data)

    def apply_overrides(self, overrides: list[str]) -> TrainConfig:
        """A copy with ``section.key=value`` overrides applied (``model.params.name=value`` too).

        The value is a TOML literal (``3``, ``1e-4``, ``true``, ``[1, 2]``, ``"text"``); for a
        string key a bare word is taken as is (``train.amp=bf16``).
        """
        data = self.to_dict()
        for item in overrides:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep:
                raise ConfigError(f"override {item!r}: expected section.key=value")
            parts = key.split(".")
            if len(parts) == 3 and parts[:2] == ["model", "params"]:
                data["model"]["params"][parts[2]] = parse_literal(raw, str, key)
                continue
            if len(parts) != 2 or parts[0] not in SECTIONS:
                raise ConfigError(
                    f"override {key!r}: unknown section; known: {', '.join(SECTIONS)}"
                )
            hints = typing.get_type_hints(SECTIONS[parts[0]])
            if parts[1] not in hints:
                raise ConfigError(f"override {key!r}: unknown key in [{parts[0]}]")
            data[parts[0]][parts[1]] = parse_literal(raw, hints[parts[1]], key)
        return TrainConfig.from_dict(data)


RESUME_SAFE_KEYS = frozenset(
    [f"data.{k}" for k in ("data_dir", "speech_dirs", "noise_dirs", "rir_dirs",
                           "valid_speech_dirs", "valid_noise_dirs")]
    + ["train.num_workers", "train.log_every_steps", "train.recompute_mamba",
       "train.activation_checkpointing", "train.keep_freed_memory", "validation.pesq_workers",
       "discriminator.pesq_workers"]
    + [f"checkpoint.{k}" for k in ("every_steps", "every_minutes", "keep_epochs")]
)  # fmt: skip
"""Settings a resumed run may change: where the data lives, worker counts, logging, checkpoint
cadence and memory switches. None of them changes what is trained (the data must be the same
files; items are a pure function of seed, epoch and index, whatever the worker count)."""


def _flat(cfg: TrainConfig) -> dict[str, Any]:
    return {
        f"{section}.{key}": value
        for section, table in cfg.to_dict().items()
        for key, value in table.items()
    }


def resume_overrides(saved: TrainConfig, overrides: list[str]) -> tuple[TrainConfig, list[str]]:
    """`saved` with the overrides a resume allows, and one "key: old -> new" line per change.

    Raises:
        ConfigError: an override would change a setting outside RESUME_SAFE_KEYS (one line
            naming it and why).
    """
    new = saved.apply_overrides(overrides)
    old_flat, new_flat = _flat(saved), _flat(new)
    changes = []
    for key, value in new_flat.items():
        if value == old_flat[key]:
            continue
        if key not in RESUME_SAFE_KEYS:
            raise ConfigError(
                f"{key} cannot change on --resume ({old_flat[key]!r} -> {value!r}): it changes "
                "what the run trains; start a new run, e.g. with --init from this run's "
                "checkpoint (paths, worker counts, logging and checkpoint cadence may change)"
            )
        changes.append(f"{key}: {old_flat[key]!r} -> {value!r}")
    return new, changes


def lr_at(step: int, optim: OptimSection, total_steps: int, base_lr: float | None = None) -> float:
    """Learning rate of optimizer step `step` (0-based): a pure function, no scheduler state.

    Linear warm-up from base / warmup_steps (step 0) to base (step warmup_steps - 1), then
    cosine from base to min_lr at step `total_steps`, or step decay: base * gamma^k with k the
    number of whole `step_every` periods since warm-up, floored at min_lr. `base_lr` replaces
    `optim.lr` (e.g. the discriminator's); min_lr then scales by base_lr / optim.lr.
    """
    base = optim.lr if base_lr is None else base_lr
    floor = optim.min_lr * base / optim.lr
    warmup = optim.warmup_steps
    if step < warmup:
        return base * (step + 1) / warmup
    since = step - warmup
    if optim.schedule == "step":
        return max(floor, base * optim.step_gamma ** (since // optim.step_every))
    progress = min(1.0, since / max(1, total_steps - warmup))
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
