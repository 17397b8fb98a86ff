"""On-the-fly mixing of clean speech, noise and optional reverberation, fully seeded.

Each item is a pure function of (seed, epoch, index): cut a speech segment, pick a noise
segment (looped when the file is short), optionally reverberate the speech with a random RIR,
mix at a random SNR, then scale the pair to a random level. Decisions, documented once here:

- Reverberation: the RIR is cut to start at its direct-path peak and scaled so that peak is 1.
  The mixture holds speech convolved with the whole RIR; the TARGET is speech convolved with
  the first 50 ms of it (direct path + early reflections), the usual dereverberation target:
  late reverberation is treated as something to remove, early reflections are not.
- SNR: 10*log10(P_speech / P_noise). P_speech is the active level (`mbsnet.models.level`, the
  model's own level definition: mean power of the 20 ms frames within 40 dB of the loudest and
  above -80 dBFS) of the speech as it appears in the mixture (reverberant when reverberated).
  P_noise is the noise's mean power over the
  whole segment. A segment without active speech (or digital-silent noise) skips SNR scaling.
- EQ (with probability `eq_probability`, default 0): one random smooth equalizer on both the
  mixture and the target, as a microphone or channel colours everything it records: gains
  uniform in +-`eq_db` at EQ_BANDS log-spaced frequencies (100 Hz .. 7 kHz), interpolated over
  log frequency and applied as a linear-phase FIR of EQ_TAPS taps (`eq_filter`). The SNR is
  set before the EQ, so the recorded SNR moves with it.
- Noise colour (with probability `noise_tilt_probability`, default 0): the noise alone gets a
  random spectral tilt, uniform in `noise_tilt_db_per_octave` (gains slope * log2(f / 1 kHz) at
  the EQ bands, the same FIR as the EQ), before the SNR is set. Recorded noise is mostly
  low-frequency (DEMAND, vehicles, machines), so speech above a few kHz is often clean in the
  mixture: without this the noise files here are flatter than that, and a model trained on them
  learns to cut clean high-frequency speech.
- Band-limited noise (with probability `noise_lowpass_probability`, default 0): the noise alone
  is low-passed at a cutoff log-uniform in `noise_lowpass_hz`, falling 48 dB per octave above it
  (`lowpass_gains`), before the SNR is set. Much recorded noise (cars, ventilation, wind, the
  DEMAND recordings of VoiceBank+DEMAND) leaves the speech above a few hundred Hz clean; a model
  that never hears that learns to gate quiet speech wherever there is noise at all.
- Focus noise (training only, with probability `noise_focus_probability`, default 0): the
  noise file is drawn from those whose name matches `noise_focus_glob` instead of from all, so
  a few minutes of in-domain noise (the DEMAND noise of `vbd_train6`) are heard more often
  than their share of files. Validation mixtures keep the uniform draw, so runs with and
  without it are scored on the same mixtures.
- Noiseless items (with probability `noiseless_probability`, default 0): the mixture is the
  speech alone (reverberant when reverberated), so the model learns to pass clean input.
- Level: noisy and clean are scaled alike so the mixture RMS is uniform in `level_dbfs`
  (default -35..-15 dBFS); if either peak then exceeds 0.99 both are scaled down to 0.99.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mbsnet import SAMPLE_RATE
from mbsnet.audio import AudioError
from mbsnet.models.level import active_mean_square
from mbsnet.train.config import SPEECH_SAMPLING
from mbsnet.train.data import (
    Item,
    PathLike,
    check_key,
    non_negative,
    seconds_to_samples,
    seeded_rng,
)
from mbsnet.train.files import AudioFile, DataError, load_mono, read_region, scan_audio_files

_STREAM_MIX_TRAIN = 2
_STREAM_MIX_VALID = 3
_STREAM_MIX_VALID_ORDER = 4
EARLY_REVERB_MS = 50.0
PEAK_LIMIT = 0.99
EQ_BANDS = 6
EQ_TAPS = 511
EQ_RANGE_HZ = (100.0, 7000.0)
TILT_PIVOT_HZ = 1000.0
NOISE_TILT_RANGE = (-9.0, 3.0)
"""Default range of the noise's spectral tilt, dB per octave."""
NOISE_LOWPASS_RANGE_HZ = (100.0, 2000.0)
"""Default range of the band-limited noise's cutoff, Hz."""
LOWPASS_DB_PER_OCTAVE = 48.0
LOWPASS_FLOOR_DB = -90.0


def eq_filter(gains_db: Sequence[float], taps: int = EQ_TAPS) -> np.ndarray:
    """Linear-phase FIR whose magnitude follows `gains_db` at EQ_BANDS log-spaced frequencies.

    The gains are interpolated over log frequency (held flat outside EQ_RANGE_HZ), the
    zero-phase response is centred and Hann-windowed. Shape: (taps,), taps odd.
    """
    centres = np.geomspace(*EQ_RANGE_HZ, num=len(gains_db))
    n_fft = 4 * taps
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)
    log_f = np.log(np.maximum(freqs, 1.0))
    curve = 10 ** (np.interp(log_f, np.log(centres), np.asarray(gains_db, float)) / 20)
    impulse = np.roll(np.fft.irfft(curve, n_fft), taps // 2)[:taps]
    return (impulse * np.hanning(taps + 2)[1:-1]).astype(np.float64)


def tilt_gains(slope_db_per_octave: float) -> tuple[float, ...]:
    """EQ gains (`eq_filter`) of a spectral tilt: slope * log2(f / TILT_PIVOT_HZ) at the bands."""
    centres = np.geomspace(*EQ_RANGE_HZ, num=EQ_BANDS)
    return tuple(float(g) for g in slope_db_per_octave * np.log2(centres / TILT_PIVOT_HZ))


def lowpass_gains(cutoff_hz: float, n: int) -> np.ndarray:
    """rFFT gains (n // 2 + 1,) of the noise low-pass: 1 up to `cutoff_hz`, then falling
    LOWPASS_DB_PER_OCTAVE per octave down to LOWPASS_FLOOR_DB."""
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(freqs, 1.0) / cutoff_hz)
    db = np.maximum(-LOWPASS_DB_PER_OCTAVE * np.maximum(octaves, 0.0), LOWPASS_FLOOR_DB)
    return 10 ** (db / 20)


def _lowpassed(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """x low-passed by `lowpass_gains` (zero phase, over the whole segment), float32."""
    spectrum = np.fft.rfft(x.astype(np.float64)) * lowpass_gains(cutoff_hz, x.shape[0])
    return np.fft.irfft(spectrum, x.shape[0]).astype(np.float32)


def _filtered(x: np.ndarray, gains_db: Sequence[float]) -> np.ndarray:
    """x through `eq_filter(gains_db)`, same length, float32."""
    return np.convolve(x, eq_filter(gains_db), "same").astype(np.float32)


def active_power(x: np.ndarray) -> float:
    """Mean power of the active 20 ms frames of `x` (`mbsnet.models.level`); 0 if none."""
    wave = torch.from_numpy(np.asarray(x, dtype=np.float64)).unsqueeze(0)
    return float(active_mean_square(wave))


def _noise_gain(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """Factor for `noise` that puts it `snr_db` below the active speech power."""
    p_speech = active_power(speech)
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_noise <= 0.0:
        return 0.0
    if p_speech <= 0.0:
        return 1.0  # no speech in this cut: the SNR is undefined, keep the noise as recorded
    return math.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))


def _fft_convolve_tail(x: np.ndarray, h: np.ndarray, length: int) -> np.ndarray:
    """x * h at the times of the last `length` samples of x (x holds >= len(h)-1 of history)."""
    n = x.shape[0] + h.shape[0] - 1
    nfft = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)
    return y[x.shape[0] - length : x.shape[0]].astype(np.float32)


def _span(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """x[start:stop] with zeros wherever the range leaves x (start may be negative)."""
    out = np.zeros(stop - start, dtype=np.float32)
    lo, hi = max(start, 0), min(stop, x.shape[0])
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out


def _load_rir(audio: AudioFile) -> np.ndarray:
    """RIR from its direct-path peak on, scaled so the peak is 1."""
    h = load_mono(audio)
    peak = int(np.argmax(np.abs(h)))
    if h[peak] == 0:
        raise AudioError(audio.path, "the room impulse response is silent")
    return (h[peak:] / abs(h[peak])).astype(np.float64)


@dataclass(frozen=True)
class MixParams:
    """Every random choice of one mixture; `render` turns it into audio."""

    speech: AudioFile
    speech_start: int
    noise: AudioFile
    noise_start: int
    rir: AudioFile | None
    snr_db: float
    level_dbfs: float
    eq_db: tuple[float, ...] | None = None
    """Gains of the random EQ at its bands (see `eq_filter`); None: no EQ."""
    noise_tilt: float | None = None
    """Spectral tilt of the noise alone, dB per octave (see `tilt_gains`); None: as recorded."""
    noiseless: bool = False
    """The mixture is the speech alone."""
    noise_lowpass_hz: float | None = None
    """Cutoff of the noise's low-pass (see `lowpass_gains`); None: full band."""


class _MixingBase(Dataset):
    """File scans, parameter draws and rendering shared by the train and validation sets."""

    def __init__(
        self,
        speech_files: Sequence[PathLike],
        noise_files: Sequence[PathLike],
        rir_files: Sequence[PathLike] | None,
        segment_seconds: float,
        seed: int,
        *,
        snr_db: tuple[float, float] = (-5.0, 15.0),
        rir_probability: float = 0.3,
        level_dbfs: tuple[float, float] = (-35.0, -15.0),
        eq_probability: float = 0.0,
        eq_db: float = 6.0,
        noise_tilt_probability: float = 0.0,
        noise_tilt_db_per_octave: tuple[float, float] = NOISE_TILT_RANGE,
        noiseless_probability: float = 0.0,
        noise_lowpass_probability: float = 0.0,
        noise_lowpass_hz: tuple[float, float] = NOISE_LOWPASS_RANGE_HZ,
    ):
        """The mixing settings (keywords, shared by both sets and given to them as `**mix`):
        SNR range in dB on active speech, RIR probability, level range in dBFS, EQ probability
        and depth in dB, noise tilt probability and range in dB/octave, noise-free probability,
        noise low-pass probability and cutoff range in Hz.
        """
        self.speech_scan = scan_audio_files(speech_files, "speech")
        self.noise_scan = scan_audio_files(noise_files, "noise")
        self.rir_scan = scan_audio_files(rir_files or [], "rir")
        for scan in (self.speech_scan, self.noise_scan):
            if not scan.files:
                raise DataError(f"no usable {scan.role} files: {scan.summary()}")
        if rir_files and not self.rir_scan.files:
            raise DataError(f"RIR files given but none usable: {self.rir_scan.summary()}")
        ranges = (("snr_db", snr_db), ("level_dbfs", level_dbfs),
                  ("noise_tilt_db_per_octave", noise_tilt_db_per_octave),
                  ("noise_lowpass_hz", noise_lowpass_hz))  # fmt: skip
        for name, (lo, hi) in ranges:
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if not 0.0 <= rir_probability <= 1.0:
            raise ValueError(f"rir_probability must be in [0, 1], got {rir_probability}")
        if not 0.0 <= eq_probability <= 1.0 or eq_db < 0:
            raise ValueError(f"need eq_probability in [0, 1] and eq_db >= 0, got "
                             f"{eq_probability}, {eq_db}")  # fmt: skip
        self.eq_probability, self.eq_db = float(eq_probability), float(eq_db)
        for name, value in (("noise_tilt_probability", noise_tilt_probability),
                            ("noiseless_probability", noiseless_probability),
                            ("noise_lowpass_probability", noise_lowpass_probability)):  # fmt: skip
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.noise_tilt_probability = float(noise_tilt_probability)
        self.noise_tilt_db_per_octave = tuple(float(v) for v in noise_tilt_db_per_octave)
        self.noiseless_probability = float(noiseless_probability)
        if not (noise_lowpass_hz[0] > 0.0 and noise_lowpass_hz[1] < SAMPLE_RATE / 2):
            raise ValueError(f"noise_lowpass_hz must lie in (0, {SAMPLE_RATE // 2}) Hz, "
                             f"got {tuple(noise_lowpass_hz)}")  # fmt: skip
        self.noise_lowpass_probability = float(noise_lowpass_probability)
        self.noise_lowpass_hz = tuple(float(v) for v in noise_lowpass_hz)
        self.segment = seconds_to_samples(segment_seconds, "segment_seconds")
        self.snr_db, self.level_dbfs = tuple(snr_db), tuple(level_dbfs)
        self.rir_probability = float(rir_probability) if self.rir_scan.files else 0.0
        self.seed = non_negative(seed, "seed")

    def _noise_room(self, noise: AudioFile) -> int:
        """Last start sample of a noise cut; a file shorter than the segment is looped."""
        return noise.length - self.segment if noise.length >= self.segment else noise.length - 1

    def _draw(self, rng: np.random.Generator, speech: AudioFile) -> MixParams:
        """All random choices, drawn in a fixed order whatever the branch taken."""
        speech_start = int(rng.integers(0, max(speech.length - self.segment, 0) + 1))
        noise = self.noise_scan.files[int(rng.integers(len(self.noise_scan.files)))]
        noise_start = int(rng.integers(0, self._noise_room(noise) + 1))
        use_rir = rng.random() < self.rir_probability
        rirs = self.rir_scan.files or [None]
        rir_index = int(rng.integers(len(rirs)))  # drawn even when unused: later draws stay put
        rir = rirs[rir_index] if use_rir else None
        snr = float(rng.uniform(*self.snr_db))
        level = float(rng.uniform(*self.level_dbfs))
        # Drawn last, and only when EQ is on: runs without EQ keep every earlier mixture.
        eq = None
        if self.eq_probability > 0:
            use_eq = rng.random() < self.eq_probability
            gains = tuple(float(g) for g in rng.uniform(-self.eq_db, self.eq_db, EQ_BANDS))
            eq = gains if use_eq else None
        # Likewise, each later option draws only when it is on.
        tilt = None
        if self.noise_tilt_probability > 0:
            use_tilt = rng.random() < self.noise_tilt_probability
            slope = float(rng.uniform(*self.noise_tilt_db_per_octave))
            tilt = slope if use_tilt else None
        p_clean = self.noiseless_probability
        noiseless = bool(p_clean > 0 and rng.random() < p_clean)
        lowpass = None
        if self.noise_lowpass_probability > 0:
            use_lowpass = rng.random() < self.noise_lowpass_probability
            log_lo, log_hi = np.log(self.noise_lowpass_hz)
            cutoff = float(np.exp(rng.uniform(log_lo, log_hi)))
            lowpass = cutoff if use_lowpass else None
        return MixParams(
            speech, speech_start, noise, noise_start, rir, snr, level, eq, tilt, noiseless, lowpass
        )

    def _noise(self, p: MixParams) -> np.ndarray:
        if p.noise.length >= self.segment:
            return read_region(p.noise, p.noise_start, self.segment)
        loop = load_mono(p.noise)
        return loop[(p.noise_start + np.arange(self.segment)) % loop.shape[0]]

    def render(self, p: MixParams) -> tuple[np.ndarray, np.ndarray]:
        """(noisy, clean) float32 (N,) for the drawn parameters."""
        x = load_mono(p.speech)
        if p.rir is None:
            mixed = target = _span(x, p.speech_start, p.speech_start + self.segment)
        else:
            h = _load_rir(p.rir)
            history = _span(x, p.speech_start - h.shape[0] + 1, p.speech_start + self.segment)
            mixed = _fft_convolve_tail(history, h, self.segment)
            early = h[: round(EARLY_REVERB_MS * SAMPLE_RATE / 1000)]
            target = _fft_convolve_tail(history, early, self.segment)
        if p.noiseless:
            noisy = mixed.copy()
        else:
            noise = self._noise(p)
            if p.noise_tilt is not None:
                noise = _filtered(noise, tilt_gains(p.noise_tilt))
            if p.noise_lowpass_hz is not None:
                noise = _lowpassed(noise, p.noise_lowpass_hz)
            noisy = mixed + np.float32(_noise_gain(mixed, noise, p.snr_db)) * noise
        if p.eq_db is not None:
            noisy, target = _filtered(noisy, p.eq_db), _filtered(target, p.eq_db)
        rms = float(np.sqrt(np.mean(np.square(noisy, dtype=np.float64))))
        gain = 10 ** (p.level_dbfs / 20) / rms if rms > 0 else 1.0
        peak = gain * max(float(np.abs(noisy).max()), float(np.abs(target).max()))
        if peak > PEAK_LIMIT:
            gain *= PEAK_LIMIT / peak
        return (noisy * gain).astype(np.float32), (target * gain).astype(np.float32)

    def _item(self, p: MixParams) -> Item:
        noisy, clean = self.render(p)
        # The whole segment is valid: past a short utterance the target is silence in noise.
        return torch.from_numpy(noisy), torch.from_numpy(clean), self.segment

    def _settings(self) -> str:
        reverb = (
            f"reverb p={self.rir_probability:.2f} (target: first {EARLY_REVERB_MS:.0f} ms)"
            if self.rir_probability
            else "no reverb"
        )
        extras = ""
        if self.eq_probability:
            extras += f", EQ p={self.eq_probability:.2f} +-{self.eq_db:g} dB"
        if self.noise_tilt_probability:
            lo, hi = self.noise_tilt_db_per_octave
            tilt = f"U({lo:g}, {hi:g}) dB/octave"
            extras += f", noise tilt p={self.noise_tilt_probability:.2f} {tilt}"
        if self.noiseless_probability:
            extras += f", noiseless p={self.noiseless_probability:.2f}"
        if self.noise_lowpass_probability:
            lo, hi = self.noise_lowpass_hz
            extras += f", noise low-pass p={self.noise_lowpass_probability:.2f} at {lo:g}-{hi:g} Hz"
        return (
            f"{self.segment / SAMPLE_RATE:.2f} s, SNR U{self.snr_db} dB on active speech, "
            f"level U{self.level_dbfs} dBFS, {reverb}{extras}, seed {self.seed}"
        )

    def summary(self) -> str:
        """One paragraph for the log: settings, then usable/excluded files per role."""
        scans = [self.speech_scan, self.noise_scan]
        if self.rir_scan.files or self.rir_scan.problems:
            scans.append(self.rir_scan)
        return f"{self.describe()}. " + "; ".join(s.summary() for s in scans) + "."

    def describe(self) -> str:
        """One line for the log (defined by each dataset)."""
        raise NotImplementedError


class MixingTrainSet(_MixingBase):
    """The epoch's mixtures, each drawn from (seed, epoch, index).

    `speech_sampling` sets how many mixtures a speech file gets per epoch: ``"file"``, one
    each; ``"duration"``, one per segment length of its audio (rounded, at least one), so
    long recordings are heard as often as their minutes warrant and a corpus of many short
    prompts does not outweigh one of long readings. Call `set_epoch(epoch)` every epoch;
    ``(epoch, index)`` keys are accepted as in `PairedTrainSet`. Items: (noisy (N,),
    clean (N,), N) with N = segment samples.
    """

    def __init__(
        self,
        speech_files: Sequence[PathLike],
        noise_files: Sequence[PathLike],
        rir_files: Sequence[PathLike] | None = None,
        segment_seconds: float = 2.0,
        seed: int = 0,
        speech_sampling: str = "file",
        noise_focus_glob: str = "",
        noise_focus_probability: float = 0.0,
        **mix: Any,
    ):
        super().__init__(speech_files, noise_files, rir_files, segment_seconds, seed, **mix)
        if not 0.0 <= noise_focus_probability <= 1.0:
            raise ValueError(
                f"noise_focus_probability must be in [0, 1], got {noise_focus_probability}"
            )
        self.noise_focus_probability = float(noise_focus_probability)
        self.noise_focus_glob = noise_focus_glob
        self._focus = [f for f in self.noise_scan.files
                       if fnmatch.fnmatch(f.path.name, noise_focus_glob)]  # fmt: skip
        if self.noise_focus_probability > 0 and not self._focus:
            raise DataError(f"noise_focus_glob {noise_focus_glob!r} matches no training "
                            f"noise file")  # fmt: skip
        if speech_sampling not in SPEECH_SAMPLING:
            raise ValueError(
                f"speech_sampling must be one of {', '.join(SPEECH_SAMPLING)}, "
                f"got {speech_sampling!r}"
            )
        self.speech_sampling = speech_sampling
        files = self.speech_scan.files
        if speech_sampling == "file":
            per_file = np.ones(len(files), dtype=np.int64)
        else:
            per_file = np.array([max(1, round(f.length / self.segment)) for f in files])
        self._ends = np.cumsum(per_file)  # item i belongs to the first file whose end > i
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select this epoch's mixtures (the only state; set it before iterating)."""
        self.epoch = non_negative(epoch, "epoch")

    def __len__(self) -> int:
        return int(self._ends[-1])

    def params(self, key: int | tuple[int, int]) -> MixParams:
        """The random choices behind item `key` (for logs and tests)."""
        epoch, index = check_key(key, len(self), self.epoch)
        rng = seeded_rng(_STREAM_MIX_TRAIN, self.seed, epoch, index)
        speech = self.speech_scan.files[int(np.searchsorted(self._ends, index, side="right"))]
        p = self._draw(rng, speech)
        if self.noise_focus_probability > 0:  # drawn last and only when on: see _draw
            use_focus = rng.random() < self.noise_focus_probability
            noise = self._focus[int(rng.integers(len(self._focus)))]
            start = int(rng.integers(0, self._noise_room(noise) + 1))
            if use_focus:
                p = replace(p, noise=noise, noise_start=start)
        return p

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        return self._item(self.params(key))

    def describe(self) -> str:
        """One line for the log: size and mixing settings."""
        n_files = len(self.speech_scan.files)
        per = "speech file" if self.speech_sampling == "file" else "segment of speech"
        focus = ""
        if self.noise_focus_probability:
            focus = (f", noise from {len(self._focus)} files matching {self.noise_focus_glob!r} "
                     f"p={self.noise_focus_probability:.2f}")  # fmt: skip
        return (
            f"mixing train: {len(self)} mixtures per epoch (one per {per}, {n_files} files), "
            f"{self._settings()}{focus}"
        )


class MixingValidationSet(_MixingBase):
    """A fixed list of `n_items` mixtures drawn from the seed alone: identical every epoch.

    Its segment length is its own (default 4 s), independent of the training set's.
    """

    def __init__(
        self,
        speech_files: Sequence[PathLike],
        noise_files: Sequence[PathLike],
        rir_files: Sequence[PathLike] | None = None,
        segment_seconds: float = 4.0,
        n_items: int = 50,
        seed: int = 1234,
        **mix: Any,
    ):
        super().__init__(speech_files, noise_files, rir_files, segment_seconds, seed, **mix)
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = int(n_items)
        # Speech files in a seeded order, cycled: every file is used before any repeats.
        order = seeded_rng(_STREAM_MIX_VALID_ORDER, self.seed, 0, 0)
        self._speech_order = order.permutation(len(self.speech_scan.files))

    def set_epoch(self, epoch: int) -> None:
        """No effect: the validation mixtures do not depend on the epoch."""

    def __len__(self) -> int:
        return self.n_items

    def params(self, index: int) -> MixParams:
        """The random choices behind item `index`."""
        _, index = check_key(index, self.n_items, 0)
        speech = self.speech_scan.files[self._speech_order[index % len(self._speech_order)]]
        return self._draw(seeded_rng(_STREAM_MIX_VALID, self.seed, 0, index), speech)

    def __getitem__(self, index: int) -> Item:
        return self._item(self.params(index))

    def describe(self) -> str:
        """One line for the log: size and mixing settings."""
        return f"mixing validation: {self.n_items} fixed mixtures, {self._settings()}"
