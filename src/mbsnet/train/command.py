"""`mbsnet train` and `mbsnet train-plot`: the click layer over `mbsnet.train.loop`.

Only click is imported at module level: `mbsnet.cli` registers these commands on start-up,
and worker processes that re-import the CLI must not pay for torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

_PATHS = click.Path(path_type=Path)


def _quoted(paths: tuple[Path, ...]) -> str:
    """A TOML list literal of path strings."""
    return json.dumps([str(p) for p in paths])


def _data_overrides(
    data_dir: Path | None,
    speech: tuple[Path, ...],
    noise: tuple[Path, ...],
    rir: tuple[Path, ...],
    valid_speech: tuple[Path, ...],
    valid_noise: tuple[Path, ...],
) -> list[str]:
    """The `--set` equivalents of the data options (applied before the user's own --set)."""
    mixing = speech or noise or rir or valid_speech or valid_noise
    if data_dir is not None and mixing:
        raise click.UsageError("give --data-dir (paired) or --speech/--noise (mixing), not both")
    if data_dir is not None:
        return [f"data.data_dir={json.dumps(str(data_dir))}"]
    if not mixing:
        return []
    if not (speech and noise):
        raise click.UsageError("mixing mode needs both --speech and --noise")
    lists = {"speech_dirs": speech, "noise_dirs": noise, "rir_dirs": rir}
    lists |= {"valid_speech_dirs": valid_speech, "valid_noise_dirs": valid_noise}
    return ['data.mode="mixing"'] + [f"data.{k}={_quoted(v)}" for k, v in lists.items() if v]


def _train_config(config: Path | None, data: list[str], overrides: tuple[str, ...], overfit: int):
    """Defaults, then the TOML file, the data options, the overfit recipe and --set, in order."""
    from mbsnet.train.config import OVERFIT_SETTINGS, ConfigError, TrainConfig

    try:
        cfg = TrainConfig.from_toml(config) if config else TrainConfig.defaults()
        recipe = list(OVERFIT_SETTINGS) if overfit else []
        return cfg.apply_overrides([*data, *recipe, *overrides])
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


def _multi_dir(name: str, help: str):
    return click.option(name, multiple=True, type=_PATHS, metavar="DIR", help=help)


@click.command()
@click.option("--config", type=_PATHS, help="Training config (TOML); see --print-config.")
@click.option(
    "--data-dir", type=_PATHS,
    help="Paired data: train/{clean,noisy} and valid/ (or test/); sets data.data_dir.",
)  # fmt: skip
@_multi_dir("--speech", "Mixing mode: clean speech folder (repeatable); sets data.speech_dirs.")
@_multi_dir("--noise", "Mixing mode: noise folder (repeatable); sets data.noise_dirs.")
@_multi_dir("--rir", "Mixing mode: room impulse responses folder (repeatable, optional).")
@_multi_dir(
    "--valid-speech",
    "Mixing mode: held-out validation speech (default: data.valid_holdout of --speech files).",
)
@_multi_dir(
    "--valid-noise",
    "Mixing mode: held-out validation noise (default: data.valid_holdout of --noise files).",
)
@click.option(
    "--run-dir", type=_PATHS,
    help="Output folder: checkpoints/, train.log, steps.csv, epochs.csv, config.toml.",
)  # fmt: skip
@click.option(
    "--init", "init", metavar="CKPT",
    help='Start from this checkpoint\'s weights ("default": the bundled model) with a fresh '
    "optimizer and schedule; the model comes from the checkpoint (sets model.init).",
)
@click.option(
    "--resume", "resume_dir", type=_PATHS,
    help="Continue the run in this folder from checkpoints/latest.pt (its own config).",
)  # fmt: skip
@click.option(
    "--resume-from", metavar="NAME",
    help="With --resume: continue from this file of RUN_DIR/checkpoints (e.g. epoch_0003.pt "
    "when latest.pt is damaged) instead of latest.pt.",
)  # fmt: skip
@click.option(
    "--max-steps", type=click.IntRange(min=1),
    help="Total optimizer steps: sets train.max_steps, which is also the length of the LR "
    "schedule (changing it on --resume reshapes the rest of the schedule).",
)  # fmt: skip
@click.option(
    "--stop-at-step", type=click.IntRange(min=1),
    help="Save latest.pt and stop once this step is done, leaving the schedule as it is "
    "(for time-limited jobs: a later --resume continues exactly).",
)  # fmt: skip
@click.option(
    "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
    help="Override one config value (TOML syntax, repeatable), e.g. train.batch_size=8.",
)  # fmt: skip
@click.option("--print-config", is_flag=True, help="Print the resulting config as TOML and exit.")
@click.option(
    "--overfit", type=click.IntRange(min=1), default=None,
    help="Sanity check: train and validate on the first N training pairs with the overfit "
    "recipe (mbsnet.train.config.OVERFIT_SETTINGS, before --set); log their PESQ.",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    config: Path | None, data_dir: Path | None, speech: tuple[Path, ...],
    noise: tuple[Path, ...], rir: tuple[Path, ...], valid_speech: tuple[Path, ...],
    valid_noise: tuple[Path, ...], run_dir: Path | None, init: str | None,
    resume_dir: Path | None, resume_from: str | None,
    max_steps: int | None, stop_at_step: int | None, overrides: tuple[str, ...],
    print_config: bool, overfit: int | None, quiet: bool,
) -> None:  # fmt: skip
    """Train a model (metric-GAN recipe): fresh with --run-dir, or continue with --resume.

    Data: --data-dir for paired folders, or --speech and --noise (and --rir) to mix on the
    fly. Checkpoints go to RUN_DIR/checkpoints: latest.pt (every checkpoint.every_steps
    steps, every checkpoint.every_minutes, each epoch end, and on SIGTERM/SIGINT, after which
    the run exits cleanly), best.pt (best validation PESQ) and epoch_XXXX.pt. All are
    ordinary checkpoints for `mbsnet enhance` and `mbsnet eval`. Runs under
    `torchrun --nproc_per_node K -m mbsnet train ...` as DistributedDataParallel.
    """
    data = _data_overrides(data_dir, speech, noise, rir, valid_speech, valid_noise)
    if init is not None:
        data.append(f"model.init={json.dumps(init)}")
    if print_config:
        if resume_dir is not None:
            raise click.UsageError("--print-config shows a new run's config; not with --resume")
        click.echo(_train_config(config, data, overrides, overfit or 0).to_toml(), nl=False)
        return
    if resume_dir is not None and (config or run_dir or overfit or init):
        raise click.UsageError(
            "--resume keeps the run's config: it takes --max-steps, --stop-at-step, and --set "
            "or data folders for settings that do not change the result (paths, workers, "
            "logging, checkpoint cadence)"
        )
    if resume_from is not None and resume_dir is None:
        raise click.UsageError("--resume-from needs --resume RUN_DIR")
    if resume_dir is None and run_dir is None:
        raise click.UsageError("give --run-dir for a new run, or --resume RUN_DIR")
    from mbsnet.checkpoint import CheckpointError
    from mbsnet.train.config import ConfigError
    from mbsnet.train.files import DataError
    from mbsnet.train.init_weights import InitError
    from mbsnet.train.loop import TrainingError
    from mbsnet.train.loop import train as run_train

    common = {"max_steps": max_steps, "stop_at_step": stop_at_step, "progress": not quiet}
    try:
        if resume_dir is not None:
            mixing_mode = [item for item in data if not item.startswith("data.mode=")]
            run_train(None, resume_dir, resume=True, overrides=[*mixing_mode, *overrides],
                      resume_from=resume_from, **common)  # fmt: skip
        else:
            cfg = _train_config(config, data, overrides, overfit or 0)
            run_train(cfg, run_dir, overfit=overfit or 0, **common)
    except (CheckpointError, ConfigError, DataError, InitError, TrainingError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@click.command("train-plot")
@click.argument("run_dir", type=_PATHS)
@click.option("-o", "--output", type=_PATHS, help="PNG (default RUN_DIR/curves.png).")
def train_plot(run_dir: Path, output: Path | None) -> None:
    """Plot training loss and validation PESQ of a `mbsnet train` RUN_DIR to a PNG."""
    from mbsnet.train.plot import PlotError, plot_run

    try:
        click.echo(str(plot_run(run_dir, output)))
    except PlotError as error:
        raise click.ClickException(str(error)) from None
