"""Model families (ProtT5, ProtBert), their Model classes and presets."""
from protlm.models.bert import BertConfig
from protlm.models.model import EncoderDecoderModel, MaskedLMModel, get_model
from protlm.models.registry import PRESETS, config_from_dict, config_to_dict, get_config
from protlm.models.t5 import T5Config

__all__ = [
    "PRESETS", "BertConfig", "EncoderDecoderModel", "MaskedLMModel", "T5Config",
    "config_from_dict", "config_to_dict", "get_config", "get_model",
]
