"""Full prot_t5_xl / prot_t5_xxl / prot_bert: exported names and shapes == transformers' (meta device).

Nothing is allocated: our side is `jax.eval_shape`, transformers builds its model on torch's meta
device from the exported config.json dict.
"""
from __future__ import annotations

import pytest

from protlm import models
from protlm.hf import export, spec

import torch
import transformers

pytestmark = pytest.mark.hf

# transformers 5 on the meta device (docs PROTTRANS_FACTS.md section 1).
EXPECTED_PARAMS = {("prot_t5_xl", "model"): 2_818_830_336, ("prot_t5_xl", "encoder"): 1_208_141_824,
                   ("prot_t5_xxl", "model"): 11_274_553_344,
                   ("prot_t5_xxl", "encoder"): 4_832_023_552,
                   ("prot_bert", "model"): 419_933_214}


def _hf_meta_state(config, part: str) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` transformers saves for the exported config (tied copies left out)."""
    cls = getattr(transformers, models.get_family(config).hf().classes[part])
    with torch.device("meta"):
        model = cls(spec.transformers_config(config, part))
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in tied}


@pytest.mark.parametrize("name,part", sorted(EXPECTED_PARAMS))
def test_names_and_shapes_match_transformers(name, part):
    config = models.get_config(name)
    shapes = spec.param_shapes(config, part)
    specs = export.hf_tensor_specs(config, shapes, part)
    ours = {s.name: tuple(s.shape) for s in specs}
    theirs = _hf_meta_state(config, part)
    assert sorted(set(ours) - set(theirs)) == [] and sorted(set(theirs) - set(ours)) == []
    assert ours == theirs
    assert sum(s.nbytes for s in specs) // 4 == EXPECTED_PARAMS[(name, part)]
    assert config.param_counts()[models.get_family(config).hf().classes[part]] == \
        EXPECTED_PARAMS[(name, part)]
