"""What export and import need from a model family: one `HFSpec` per family (`protlm/hf/<family>.py`).

A family's `protlm.models.family.Family.hf()` returns its spec; `protlm.hf.export`,
`protlm.hf.importer`, `protlm.embed`, the benchmarks and the tests use only this interface.

A *part* names one exportable model of a family: ProtT5 has `model` (T5ForConditionalGeneration)
and `encoder` (T5EncoderModel); ProtBert has `model` (BertForMaskedLM). The first entry of
`classes` is the default part.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from protlm.hf.mapping import Rule


def _no_aliases(config, part: str) -> dict[str, str]:
    del config, part
    return {}


def _no_check(config, part: str) -> None:
    del config, part


def _no_constants(config, part: str) -> dict[str, np.ndarray]:
    del config, part
    return {}


@dataclasses.dataclass(frozen=True)
class HFSpec:
    """Per-family Hugging Face conversion.

    Attributes:
      model_types: `model_type` values of config.json files this family imports.
      classes: `{part: transformers class name}`; the first part is the default export.
      embed_class: the transformers class whose `last_hidden_state` equals `protlm.embed`'s
        output (e.g. T5EncoderModel, BertModel), built from `to_hf_config(config, embed_part)`.
      embed_part: the part whose config.json `embed_class` is built from.
      rules: `(config, part) -> [Rule]`, in the order tensors are written.
      to_hf_config: `(config, part, dtype) -> config.json dict`.
      from_hf_config: `(config.json dict, **protlm config overrides) -> config`.
      write_tokenizer: `(out_dir, config) -> [file names]`.
      torch_inputs: `(numpy batch of the family's objective) -> {HF forward kwarg: numpy array}`
        giving the same loss in transformers (labels -100 where the loss weight is 0).
      tied_aliases: `(config, part) -> {alias key: canonical key}` for tied copies a checkpoint
        may store.
      dropped_keys: HF keys with no protlm counterpart, dropped on import with a warning.
      part_of_hf: `(config.json dict, weight keys) -> part` of an HF directory being imported.
      part_of_params: `(unscanned params tree) -> part` a params tree holds.
      select_params: `(params tree, part) -> the subtree of that part`.
      check_export: `(config, part) -> None`, raising when the export would not be exact.
      recognizes: `(config.json dict) -> bool` for config files without `model_type` (Rostlab's
        ALBERT); None = only by `model_type`.
      constant_tensors: `(config, part) -> {hf_key: array}` of tensors the HF class has and the
        protlm model fixes (Transformer-XL exported as XLNet: zero segment terms); export writes
        them, import requires them unchanged.
    """

    model_types: tuple[str, ...]
    classes: Mapping[str, str]
    embed_class: str
    embed_part: str
    rules: Callable[..., list[Rule]]
    to_hf_config: Callable[..., dict]
    from_hf_config: Callable[..., object]
    write_tokenizer: Callable[[str, object], list[str]]
    torch_inputs: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    tied_aliases: Callable[..., dict[str, str]] = _no_aliases
    dropped_keys: tuple[str, ...] = ()
    part_of_hf: Callable[[Mapping, set], str] | None = None
    part_of_params: Callable[[Mapping], str] | None = None
    select_params: Callable[[Mapping, str], Mapping] | None = None
    check_export: Callable[[object, str], None] = _no_check
    recognizes: Callable[[Mapping], bool] | None = None
    constant_tensors: Callable[..., dict[str, np.ndarray]] = _no_constants

    @property
    def default_part(self) -> str:
        return next(iter(self.classes))

    def check_part(self, part: str | None) -> str:
        """`part` (default part when None), validated against `classes`."""
        part = self.default_part if part is None else part
        if part not in self.classes:
            raise ValueError(f"part {part!r} is not exportable for this family; parts: "
                             f"{sorted(self.classes)}")
        return part

    def hf_part(self, hf_config: Mapping, keys: set) -> str:
        return self.default_part if self.part_of_hf is None else self.part_of_hf(hf_config, keys)

    def params_part(self, params: Mapping) -> str:
        return self.default_part if self.part_of_params is None else self.part_of_params(params)

    def select(self, params: Mapping, part: str) -> Mapping:
        return params if self.select_params is None else self.select_params(params, part)


def masked_labels(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """HF labels: the targets where the loss weight is positive, -100 (ignored) elsewhere."""
    return np.where(np.asarray(weights) > 0, np.asarray(targets), -100).astype(np.int64)


def param_shapes(config, part: str | None = None) -> dict:
    """Unscanned param tree of `jax.ShapeDtypeStruct` of one part of `config` (nothing allocated)."""
    import flax.linen as nn  # noqa: PLC0415
    import jax  # noqa: PLC0415

    from protlm.models import registry  # noqa: PLC0415

    if getattr(config, "scan_layers", False):
        config = dataclasses.replace(config, scan_layers=False)
    family = registry.get_family(config)
    batch = family.batch_shapes(config, family.default_lengths(8), 1, pack=False)
    variables = jax.eval_shape(lambda: family.model(config).init(jax.random.PRNGKey(0), batch))
    spec = family.hf()
    return dict(spec.select(nn.unbox(variables["params"]), spec.check_part(part)))


def transformers_config(config, part: str | None = None):
    """The transformers `PretrainedConfig` object of one part (for building torch models)."""
    import transformers  # noqa: PLC0415

    from protlm.models import registry  # noqa: PLC0415

    spec = registry.get_family(config).hf()
    part = spec.check_part(part)
    d = dict(spec.to_hf_config(config, part, "float32"))
    for key in ("torch_dtype", "dtype", "transformers_version", "architectures"):
        d.pop(key, None)
    return transformers.AutoConfig.for_model(d.pop("model_type"), **d)


def transformers_class(name: str):
    """A transformers model class by name (e.g. "T5EncoderModel")."""
    import transformers  # noqa: PLC0415

    return getattr(transformers, name)
