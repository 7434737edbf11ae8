"""Fine-tuning: LoRA, full and frozen-backbone runs, task heads (docs/finetune.md)."""
from protlm.finetune.lora import LoraConfig, merge, num_lora_params
from protlm.finetune.model import FinetuneModel, checkpoint_config, trainable_only
from protlm.finetune.tasks import TASKS, TaskSource

__all__ = ["LoraConfig", "merge", "num_lora_params", "FinetuneModel", "checkpoint_config",
           "trainable_only", "TASKS", "TaskSource"]
