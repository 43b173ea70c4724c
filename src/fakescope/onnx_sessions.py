"""ONNX Runtime CPU sessions, made one way for the face detector and the scoring members."""

from __future__ import annotations

from typing import Any


def cpu_session(model: bytes, threads: int) -> Any:
    """An onnxruntime.InferenceSession on the CPU; threads 0: one per core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep rather than spin: decoding, the other sessions and PyTorch share the
    # cores, and spinning took 0.15 s of the benchmark's 1.4 s analyze (2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
