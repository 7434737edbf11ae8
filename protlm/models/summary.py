"""Parameter count, per-module breakdown and FLOPs per token of a preset, without allocating.

    python -m protlm.models.summary --model prot_t5_xl
    python -m protlm.models.summary --model prot_bert --length 2048 --json
    python -m protlm.models.summary --model prot_t5_tiny --set mlp_dim=128 --set dropout_rate=0

Shapes come from `jax.eval_shape` of the model's init (nothing is allocated), checked against the
config's closed-form `num_params()`.
"""
from __future__ import annotations

import argparse
import ast
import collections
import json
import re
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

import protlm.models as M
from protlm.models import t5

_LAYER = re.compile(r"^layers(_\d+)?$")


def _abstract_params(config) -> dict:
    config = type(config)(**{**M.config_to_dict(config)["config"], "scan_layers": True})
    model = M.get_model(config)
    shapes = {k: jax.ShapeDtypeStruct((1, 8), np.int32)
              for k in ("encoder_input_tokens", "decoder_input_tokens")}
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), shapes)["params"])


def module_breakdown(params: dict, depth: int = 3) -> dict[str, int]:
    """Parameters per module path (first `depth` names; all layers summed as `layers_*`)."""
    counts: dict[str, int] = collections.Counter()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = ["layers_*" if _LAYER.match(k.key) else k.key for k in path]
        counts["/".join(names[:depth])] += int(np.prod(leaf.shape))
    return dict(sorted(counts.items()))


def summarize(config, enc_len: int = 512, dec_len: int = 512) -> dict:
    """A JSON-serialisable summary: counts, breakdown, FLOPs (training, fwd + bwd)."""
    params = _abstract_params(config)
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    if total != config.num_params():
        raise AssertionError(f"eval_shape count {total} != formula {config.num_params()}")
    out = {"config": M.config_to_dict(config), "num_params": total,
           "param_bytes_fp32": 4 * total, "modules": module_breakdown(params)}
    if isinstance(config, t5.T5Config):
        out.update(num_encoder_params=config.num_encoder_params(), enc_len=enc_len,
                   dec_len=dec_len, flops_per_example=config.flops_per_example(enc_len, dec_len),
                   flops_per_token=config.flops_per_token(enc_len, dec_len))
    else:
        out.update(length=enc_len, flops_per_example=config.flops_per_example(enc_len),
                   flops_per_token=config.flops_per_token(enc_len))
    return out


def format_summary(s: dict) -> str:
    """Human-readable table of `summarize`'s output."""
    fam, cfg = s["config"]["family"], s["config"]["config"]
    lines = [f"family: {fam}   " + "  ".join(f"{k}={v}" for k, v in cfg.items()), ""]
    width = max(len(k) for k in s["modules"])
    for name, n in s["modules"].items():
        lines.append(f"  {name:<{width}}  {n:>16,d}  {100 * n / s['num_params']:6.2f} %")
    lines.append("")
    gib = s["param_bytes_fp32"] / 2**30
    lines.append(f"parameters:        {s['num_params']:,d}  ({gib:.2f} GiB fp32)")
    if "num_encoder_params" in s:
        lines.append(f"encoder only:      {s['num_encoder_params']:,d}")
        lines.append(f"training FLOPs per example (enc {s['enc_len']}, dec {s['dec_len']}): "
                     f"{s['flops_per_example']:.4e}")
        lines.append(f"training FLOPs per token (enc + dec tokens): {s['flops_per_token']:.4e}")
    else:
        lines.append(f"training FLOPs per token (length {s['length']}): {s['flops_per_token']:.4e}")
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects NAME=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # plain strings such as dtype=bfloat16


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help=f"preset: {', '.join(sorted(M.PRESETS))}")
    parser.add_argument("--length", "--enc_len", dest="enc_len", type=int, default=512,
                        help="encoder (or BERT) sequence length for FLOPs")
    parser.add_argument("--dec_len", type=int, default=512, help="decoder length (T5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        type=_parse_override, help="config override NAME=VALUE (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        config = M.get_config(args.model, **dict(args.overrides))
    except ValueError as e:
        parser.error(str(e))
    s = summarize(config, args.enc_len, args.dec_len)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))


if __name__ == "__main__":
    main(sys.argv[1:])
