"""protlm with its carried memory against an exported transformers model with `mems`.

One comparison for ProtTXL and ProtXLNet exports (both `XLNetLMHeadModel`), used by the parity
tests and `tools/xl_hf_parity.py`: consecutive stream segments (rows continuing across segments)
run through protlm's `forward` with the carry and through transformers with `mems`, and the
largest |logit difference| over each segment's loss-weighted positions is returned. Needs torch
(the `hf` extra).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np


def segment_logit_diffs(model, spec, params, hf, batches: Sequence[Mapping[str, np.ndarray]]
                        ) -> tuple[list[float], dict, tuple]:
    """Run `batches` in order on both sides, each with the memory of the ones before.

    Args:
      model: the protlm model (`models.get_model(config)`); spec: its family's `HFSpec`.
      params: unboxed protlm parameters; hf: the transformers model (eval mode).
      batches: consecutive batches of the family's stream objective.

    Returns:
      (max |logit diff| per segment, protlm's last carry, transformers' last `mems`).
    """
    import torch  # noqa: PLC0415

    carry = nn.meta.unbox(model.init_carry(batches[0]))
    forward = jax.jit(model.forward)
    mems, diffs = None, []
    for batch in batches:
        logits, carry = forward(params, batch, carry)
        inputs = {k: torch.as_tensor(v) for k, v in spec.torch_inputs(batch).items()
                  if k != "labels"}
        with torch.no_grad():
            out = hf(**inputs, mems=mems, use_mems=True)
        mems = out.mems
        weights = np.asarray(batch[model.weights_key]) > 0
        diffs.append(float(np.abs(np.asarray(logits) - out.logits.numpy())[weights].max()))
    return diffs, carry, mems
