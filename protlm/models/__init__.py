"""Model families (ProtT5, ProtBert, ...): configs, networks, Model classes, the registry."""
from protlm.models.bert import BertConfig
from protlm.models.bert_family import BertFamily
from protlm.models.family import Family, ModelConfig
from protlm.models.model import BaseModel, MaskedLMModel
from protlm.models.registry import (FAMILIES, PRESETS, config_from_dict, config_to_dict,
                                    family_by_name, get_config, get_family, get_model)
from protlm.models.t5 import T5Config
from protlm.models.t5_family import EncoderDecoderModel, T5Family

__all__ = [
    "FAMILIES", "PRESETS", "BaseModel", "BertConfig", "BertFamily", "EncoderDecoderModel",
    "Family", "MaskedLMModel", "ModelConfig", "T5Config", "T5Family", "config_from_dict",
    "config_to_dict", "family_by_name", "get_config", "get_family", "get_model",
]
