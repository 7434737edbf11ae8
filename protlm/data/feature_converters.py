"""Feature converters: task features -> model batches (names in docs/ARCHITECTURE.md).

ProtT5 uses seqio's `EncDecFeatureConverter` unchanged. ProtBert needs `MLMFeatureConverter`:
seqio's `EncoderFeatureConverter` derives the loss weights from `inputs == mask_id`, which misses
the 10 % random and 10 % unchanged positions of BERT's 80/10/10 rule (they are trained on too).
This converter takes the weights from the task's `loss_weights` feature instead, and packs them
together with the tokens.
"""
from __future__ import annotations

from typing import Mapping

import seqio
import tensorflow as tf

from protlm.data import tokens as tok

FeatureSpec = seqio.FeatureConverter.FeatureSpec


class MLMFeatureConverter(seqio.FeatureConverter):
    """Encoder-only MLM: {"inputs", "targets", "loss_weights"} -> encoder_* features.

    Output: `encoder_input_tokens, encoder_target_tokens, encoder_loss_weights` and, when packed,
    `encoder_segment_ids, encoder_positions` (all int32 [length]). `task_feature_lengths` may give
    only "inputs"; "targets" and "loss_weights" default to the same length (they are aligned).
    """

    TASK_FEATURES = {
        "inputs": FeatureSpec(dtype=tf.int32),
        "targets": FeatureSpec(dtype=tf.int32),
        "loss_weights": FeatureSpec(dtype=tf.int32),
    }
    MODEL_FEATURES = {
        "encoder_input_tokens": FeatureSpec(dtype=tf.int32),
        "encoder_target_tokens": FeatureSpec(dtype=tf.int32),
        "encoder_loss_weights": FeatureSpec(dtype=tf.int32),
    }
    PACKING_FEATURE_DTYPES = {
        "encoder_segment_ids": tf.int32,
        "encoder_positions": tf.int32,
    }

    def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        lengths = dict(task_feature_lengths)
        length = lengths["inputs"]
        for key in ("targets", "loss_weights"):
            if lengths.setdefault(key, length) != length:
                raise ValueError(f"MLM features are aligned: {key} length {lengths[key]} != inputs length {length}")
        return super().__call__(ds, lengths)

    def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
        # seqio's packer takes a feature's length as its count of non-zero values, so the 0/1
        # weights travel as 1/2 and are shifted back after packing (padding stays 0).
        def shift_up(features):
            features = dict(features)
            features["loss_weights"] = features["loss_weights"] + 1
            return features

        ds = self._pack_or_pad(ds.map(shift_up, num_parallel_calls=tf.data.AUTOTUNE), task_feature_lengths)

        def convert(features):
            d = {
                "encoder_input_tokens": features["inputs"],
                "encoder_target_tokens": features["targets"],
                "encoder_loss_weights": tf.maximum(features["loss_weights"] - 1, 0),
            }
            if self.pack:
                d["encoder_segment_ids"] = features["inputs_segment_ids"]
                d["encoder_positions"] = features["inputs_positions"]
            return d

        return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

    def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
        length = task_feature_lengths["inputs"]
        keys = list(self.MODEL_FEATURES) + (list(self.PACKING_FEATURE_DTYPES) if self.pack else [])
        return {k: length for k in keys}


def is_mlm_task(task: seqio.Task) -> bool:
    """MLM tasks are the ones whose output features include "loss_weights"."""
    return "loss_weights" in task.output_features


def get_feature_converter(task_or_name: seqio.Task | str, pack: bool = True) -> seqio.FeatureConverter:
    """The converter for a task: `MLMFeatureConverter` for MLM tasks, `EncDecFeatureConverter` otherwise."""
    task = seqio.get_mixture_or_task(task_or_name) if isinstance(task_or_name, str) else task_or_name
    if is_mlm_task(task):
        return MLMFeatureConverter(pack=pack)
    return seqio.EncDecFeatureConverter(pack=pack, bos_id=tok.PROTT5_PAD_ID)
