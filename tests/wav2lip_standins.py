"""Stand-in ONNX models with the public Wav2Lip signatures, built in milliseconds with onnx.helper.

The output is the unmasked reference crop (channels 3-5 of the face input) with its lower half painted a
flat colour whose brightness follows the mean of the mel window: the upper face passes through, the lower
face visibly changes and differs between loud and quiet frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (audio input, face input) names of the exports in circulation.
NAMINGS = {
    "source_target": ("source", "target"),
    "mel_video": ("mel_spectrogram", "video_frames"),
    "sequences": ("audio_sequences", "face_sequences"),
}
# BGR paint of the lower half, times the audio level in (0, 1).
PAINT_BGR = (0.2, 0.9, 0.3)


def standin_model(naming: str = "source_target", batch: int | str = "batch", audio_first: bool = True) -> bytes:
    """Serialized ONNX model; `batch` is a dimension name (dynamic) or a fixed size."""
    audio_name, face_name = NAMINGS[naming]
    audio = helper.make_tensor_value_info(audio_name, TensorProto.FLOAT, [batch, 1, 80, 16])
    face = helper.make_tensor_value_info(face_name, TensorProto.FLOAT, [batch, 6, 96, 96])
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, 96, 96])
    upper = np.zeros((1, 1, 96, 96), np.float32)
    upper[:, :, :48] = 1.0
    constants = {
        "starts": np.array([3], np.int64), "ends": np.array([6], np.int64), "axes": np.array([1], np.int64),
        "upper": upper, "lower": 1.0 - upper, "gain": np.array(1.5, np.float32), "bias": np.array(3.0, np.float32),
        "paint": np.array(PAINT_BGR, np.float32).reshape(1, 3, 1, 1),
    }
    nodes = [
        helper.make_node("Slice", [face_name, "starts", "ends", "axes"], ["reference"]),
        helper.make_node("ReduceMean", [audio_name], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["level"]),
        helper.make_node("Mul", ["level", "paint"], ["colour"]),
        helper.make_node("Mul", ["colour", "lower"], ["painted"]),
        helper.make_node("Mul", ["reference", "upper"], ["kept"]),
        helper.make_node("Add", ["kept", "painted"], ["output"]),
    ]
    inputs = [audio, face] if audio_first else [face, audio]
    graph = helper.make_graph(nodes, "wav2lip_standin", inputs, [output],
                              [numpy_helper.from_array(value, name) for name, value in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_standin(path: Path, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(standin_model(**kwargs))  # type: ignore[arg-type]
    return path


def image_model() -> bytes:
    """An ONNX model that is not a Wav2Lip: one image in, the same image out."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 96, 96])
    same = helper.make_tensor_value_info("same", TensorProto.FLOAT, [1, 3, 96, 96])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["same"])], "image", [image], [same])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
