"""protlm params -> a Hugging Face model directory (config.json, safetensors, tokenizer files).

Tensors are converted and written one at a time (`protlm.hf.safetensors_writer`), so besides the
params themselves only one converted tensor is ever in memory. Everything is written into a
temporary sibling directory that is renamed to `output_dir` when complete.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
from collections.abc import Mapping

import ml_dtypes
import numpy as np

from protlm.hf import mapping, safetensors_writer
from protlm.hf.spec import HFSpec, param_shapes
from protlm.models import registry

log = logging.getLogger(__name__)

DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
          "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def _unscanned_host_tree(params: Mapping) -> dict:
    """Unboxed, unscanned nested dict (leaves stay where they are; converted per tensor)."""
    import flax.linen as nn  # noqa: PLC0415

    params = nn.unbox(params)
    if any(isinstance(v, Mapping) and "layers" in v for v in params.values()):
        from protlm.models import scan_utils  # noqa: PLC0415

        params = scan_utils.unstack_layers(params)
    return params


def _spec(config) -> tuple[str, HFSpec]:
    family = registry.get_family(config)
    return family.name, family.hf()


def hf_tensor_specs(config, params_shapes: Mapping, part: str | None = None,
                    dtype: str = "float32") -> list[safetensors_writer.TensorSpec]:
    """The tensors an export writes: HF names, shapes and dtype, from param shapes alone.

    Args:
      config: protlm model config.
      params_shapes: unscanned param tree whose leaves have `.shape` (arrays or
        `jax.ShapeDtypeStruct` from `jax.eval_shape`).
      part: which model of the family (`HFSpec.classes`; default: the family's first).
      dtype: "float32", "float16" or "bfloat16".
    """
    name, spec = _spec(config)
    part = spec.check_part(part)
    rules = spec.rules(config, part)
    tree = dict(spec.select(params_shapes, part))
    mapping.check_rules_cover(rules, set(mapping.flatten_paths(tree)), f"{name} export")
    specs = [safetensors_writer.TensorSpec(r.hf_key, r.hf_shape(mapping.get_path(tree, r.path).shape),
                                           _np_dtype(dtype)) for r in rules]
    return specs + [safetensors_writer.TensorSpec(k, tuple(v.shape), _np_dtype(dtype))
                    for k, v in spec.constant_tensors(config, part).items()]


def check_shapes(config, tree: Mapping, part: str | None = None) -> None:
    """Raises naming every param whose shape is not the one `config` gives it."""
    expected = mapping.flatten_paths(param_shapes(config, part))
    actual = mapping.flatten_paths(tree)
    wrong = [f"{'/'.join(p)} {tuple(np.shape(actual[p]))} != {tuple(s.shape)}"
             for p, s in expected.items()
             if p in actual and tuple(np.shape(actual[p])) != tuple(s.shape)]
    if wrong:
        raise ValueError(f"params do not match their config ({type(config).__name__}): "
                         f"{len(wrong)} shapes differ, e.g. {wrong[:5]}; the checkpoint's "
                         "config.json does not describe these params")


def _np_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} not supported; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _converter(rules: list[mapping.Rule], tree: Mapping, dtype: np.dtype,
               constants: Mapping[str, np.ndarray]):
    by_key = {r.hf_key: r for r in rules}

    def produce(hf_key: str) -> np.ndarray:
        if hf_key in constants:
            return np.asarray(constants[hf_key]).astype(dtype)
        rule = by_key[hf_key]
        x = np.asarray(mapping.get_path(tree, rule.path))  # host copy of a device array, if any
        y = rule.to_hf(x)
        if y.dtype != dtype:
            converted = y.astype(dtype)
            if not np.all(np.isfinite(converted)) and np.all(np.isfinite(y)):
                raise ValueError(f"{hf_key} ({rule.flax_name}) overflows {dtype}: max |x| = "
                                 f"{float(np.max(np.abs(y))):.4g}; export with --dtype float32")
            y = converted
        return y

    return produce


def _replace_dir(tmp: pathlib.Path, output_dir: pathlib.Path, overwrite: bool) -> None:
    old = None
    if output_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{output_dir} exists; pass --overwrite or choose another "
                                  "--output_dir")
        old = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        os.replace(output_dir, old)
    os.replace(tmp, output_dir)
    if old is not None:
        shutil.rmtree(old)


def export_params(params: Mapping, config, output_dir: str | os.PathLike, *,
                  part: str | None = None, dtype: str = "float32",
                  max_shard_bytes: int = safetensors_writer.DEFAULT_MAX_SHARD_BYTES,
                  overwrite: bool = False, progress: bool = True) -> pathlib.Path:
    """Writes `params` as a transformers model directory.

    The transformers class is the family's part (`HFSpec.classes`): ProtT5 ->
    `T5ForConditionalGeneration` (part "encoder": `T5EncoderModel`, also chosen when the params
    have no decoder), ProtBert -> `BertForMaskedLM`.

    Args:
      params: the flax `params` collection (boxed or not, scanned or not, host or device).
      config: its protlm model config.
      output_dir: the directory to create.
      part: which model of the family to write (default: what the params hold).
      dtype: "float32", "float16" or "bfloat16" for the stored tensors.
      max_shard_bytes: shard into `model-0000i-of-0000n.safetensors` above this total size.
      overwrite: replace an existing `output_dir`.
      progress: show a tqdm bar over the bytes written.

    Returns:
      `output_dir` as a Path.
    """
    name, spec = _spec(config)
    np_dtype = _np_dtype(dtype)
    tree = _unscanned_host_tree(params)
    held = spec.params_part(tree)
    if part is None:
        part = held
        if part != spec.default_part:
            log.info("params hold the %s part: exporting %s", part, spec.classes[part])
    part = spec.check_part(part)
    spec.check_export(config, part)
    tree = dict(spec.select(tree, part))
    check_shapes(config, tree, part)
    specs = hf_tensor_specs(config, tree, part, dtype)
    rules = spec.rules(config, part)
    output_dir = pathlib.Path(output_dir).expanduser().absolute()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass --overwrite or choose another --output_dir")
    tmp = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        bar = None
        if progress:
            from tqdm import tqdm  # noqa: PLC0415

            bar = tqdm(total=sum(s.nbytes for s in specs), unit="B", unit_scale=True,
                       desc=f"export {name} -> {output_dir.name}")
        files = safetensors_writer.write_safetensors(
            str(tmp), specs,
            _converter(rules, tree, np_dtype, spec.constant_tensors(config, part)), max_shard_bytes,
            on_tensor=(lambda s: bar.update(s.nbytes)) if bar else None)
        if bar:
            bar.close()
        with open(tmp / "config.json", "w", encoding="utf-8") as f:
            json.dump(spec.to_hf_config(config, part, dtype), f, indent=2, sort_keys=True)
            f.write("\n")
        files += ["config.json"] + spec.write_tokenizer(str(tmp), config)
        _replace_dir(tmp, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s: %s", output_dir, ", ".join(files))
    return output_dir


def export_checkpoint(checkpoint_dir: str | os.PathLike, output_dir: str | os.PathLike,
                      step: int | None = None, **kwargs) -> pathlib.Path:
    """Exports a protlm model directory (orbax checkpoint + config.json); see `export_params`.

    Args:
      checkpoint_dir: MODEL_DIR written by `protlm.train`, `save_params` or `import_hf`.
      output_dir: the HF directory to create.
      step: checkpoint step (latest when None).
      **kwargs: `export_params` options.
    """
    from protlm import checkpoints  # noqa: PLC0415

    output = pathlib.Path(output_dir)
    if output.exists() and not kwargs.get("overwrite", False):  # fail before loading the params
        raise FileExistsError(f"{output} exists; pass --overwrite or choose another --output_dir")
    params, config = checkpoints.load_params(checkpoint_dir, step)
    return export_params(params, config, output_dir, **kwargs)
