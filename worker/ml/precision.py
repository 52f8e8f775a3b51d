"""Mixed precision on GPUs, float32 elsewhere: the same code on both."""

from __future__ import annotations

import keras
import tensorflow as tf


def gpu_count() -> int:
    return len(tf.config.list_physical_devices("GPU"))


def configure(setting: str = "auto") -> str:
    """Set Keras' global dtype policy; returns the policy name in force.

    ``auto`` uses mixed_float16 when a GPU is present (Tensor Cores; the head
    stays float32 for a stable softmax), float32 on CPU where float16 is slower.
    """
    if setting not in {"auto", "on", "off"}:
        raise ValueError(f"mixed precision setting must be auto, on or off, not {setting!r}")
    mixed = setting == "on" or (setting == "auto" and gpu_count() > 0)
    policy = "mixed_float16" if mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy
