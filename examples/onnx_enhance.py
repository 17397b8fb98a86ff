"""Enhance a 16 kHz wav file with an exported mbsnet graph: onnxruntime, numpy, soundfile only.

    python onnx_enhance.py model.onnx noisy.wav enhanced.wav
"""

import sys

import numpy as np
import onnxruntime as ort
import soundfile as sf


def main(model_path: str, in_path: str, out_path: str) -> None:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    audio, rate = sf.read(in_path, dtype="float32", always_2d=True)  # (samples, channels)
    if rate != int(meta["sample_rate"]):
        sys.exit(f"{in_path}: {rate} Hz; resample to {meta['sample_rate']} Hz first")
    if len(audio) < int(meta["min_samples"]):
        sys.exit(f"{in_path}: too short, needs {meta['min_samples']} samples")
    wave = np.ascontiguousarray(audio.T)  # channels as the batch
    # reference: the signal whose level sets the gain (the whole file, here the input itself);
    # a causal model's graph has none (it keeps a running level)
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in {"wave": wave, "reference": wave}.items() if k in names}
    (enhanced,) = session.run(["enhanced"], feeds)
    subtype = sf.info(in_path).subtype
    if subtype not in ("FLOAT", "DOUBLE"):  # integer formats would wrap, not clip
        enhanced = np.clip(enhanced, -1.0, 1.0)
    sf.write(out_path, enhanced.T, rate, subtype=subtype)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
