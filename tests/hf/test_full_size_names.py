"""Full prot_t5_xl / prot_t5_xxl / prot_bert: exported names and shapes == transformers' (meta device).

Nothing is allocated: our side is `jax.eval_shape`, transformers builds its model on torch's meta
device from the exported config.json dict.
"""
from __future__ import annotations

import pytest

from protlm import models
from protlm.hf import config as hf_config
from protlm.hf import export, importer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.hf

# transformers 5 on the meta device (docs PROTTRANS_FACTS.md section 1).
EXPECTED_PARAMS = {("prot_t5_xl", False): 2_818_830_336, ("prot_t5_xl", True): 1_208_141_824,
                   ("prot_t5_xxl", False): 11_274_553_344, ("prot_t5_xxl", True): 4_832_023_552,
                   ("prot_bert", False): 419_933_214}


def _hf_meta_state(config, encoder_only: bool) -> dict[str, tuple[int, ...]]:
    """`{key: shape}` transformers saves for the exported config (tied copies left out)."""
    if isinstance(config, models.T5Config):
        hf_cfg = transformers.T5Config(**hf_config.t5_to_hf(config, encoder_only))
        cls = transformers.T5EncoderModel if encoder_only else transformers.T5ForConditionalGeneration
    else:
        hf_cfg = transformers.BertConfig(**hf_config.bert_to_hf(config))
        cls = transformers.BertForMaskedLM
    with torch.device("meta"):
        model = cls(hf_cfg)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in tied}


@pytest.mark.parametrize("name,encoder_only", sorted(EXPECTED_PARAMS))
def test_names_and_shapes_match_transformers(name, encoder_only):
    config = models.get_config(name)
    shapes = importer.param_shapes(config, encoder_only)
    specs = export.hf_tensor_specs(config, shapes, encoder_only)
    ours = {s.name: tuple(s.shape) for s in specs}
    theirs = _hf_meta_state(config, encoder_only)
    assert sorted(set(ours) - set(theirs)) == [] and sorted(set(theirs) - set(ours)) == []
    assert ours == theirs
    assert sum(s.nbytes for s in specs) // 4 == EXPECTED_PARAMS[(name, encoder_only)]
