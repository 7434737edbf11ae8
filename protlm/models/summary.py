"""Parameter count, per-module breakdown and FLOPs per token of a preset, without allocating.

    python -m protlm.models.summary --model prot_t5_xl
    python -m protlm.models.summary --model prot_t5_xl --length 512 --target_length 128
    python -m protlm.models.summary --model prot_bert --length 2048 --json
    python -m protlm.models.summary --model prot_t5_tiny --set mlp_dim=128 --set dropout_rate=0

Shapes come from `jax.eval_shape` of the model's init (nothing is allocated), checked against the
config's closed-form `num_params()`; `param_counts()` gives the count of each Hugging Face class with
the same parameters. FLOPs use the family's task feature lengths (`--length`, and for
encoder-decoder families `--target_length`, default = `--length`).
"""
from __future__ import annotations

import argparse
import ast
import collections
import dataclasses
import json
import re
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np

import protlm.models as M

_LAYER = re.compile(r"^layers(_\d+)?$")


def _abstract_params(config) -> dict:
    config = dataclasses.replace(config, scan_layers=True)
    family = M.get_family(config)
    shapes = family.batch_shapes(config, family.default_lengths(8), 1, pack=False)
    model = family.model(config)
    return nn.meta.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), shapes)["params"])


def module_breakdown(params: dict, depth: int = 3) -> dict[str, int]:
    """Parameters per module path (first `depth` names; all layers summed as `layers_*`)."""
    counts: dict[str, int] = collections.Counter()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = ["layers_*" if _LAYER.match(k.key) else k.key for k in path]
        counts["/".join(names[:depth])] += int(np.prod(leaf.shape))
    return dict(sorted(counts.items()))


def summarize(config, length: int = 512, target_length: int | None = None) -> dict:
    """A JSON-serialisable summary: counts, breakdown, FLOPs (training, fwd + bwd)."""
    params = _abstract_params(config)
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    if total != config.num_params():
        raise AssertionError(f"eval_shape count {total} != formula {config.num_params()}")
    lengths = M.get_family(config).default_lengths(length)
    if target_length is not None and "targets" in lengths:
        lengths["targets"] = int(target_length)
    return {"config": M.config_to_dict(config), "num_params": total,
            "param_counts": config.param_counts(), "param_bytes_fp32": 4 * total,
            "modules": module_breakdown(params), "lengths": lengths,
            "flops_per_example": config.flops_per_example(lengths),
            "tokens_per_example": config.tokens_per_example(lengths),
            "flops_per_token": config.flops_per_token(lengths)}


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
    for name, n in s["param_counts"].items():
        lines.append(f"  as {name}: {n:,d}")
    lengths = ", ".join(f"{k} {v}" for k, v in s["lengths"].items())
    lines.append(f"training FLOPs per example ({lengths}): {s['flops_per_example']:.4e}")
    lines.append(f"training FLOPs per token ({s['tokens_per_example']} tokens per example): "
                 f"{s['flops_per_token']:.4e}")
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
    parser.add_argument("--length", type=int, default=512,
                        help="sequence length (task feature length 'inputs') for FLOPs")
    parser.add_argument("--target_length", type=int, default=None,
                        help="encoder-decoder families: decoder length (default: --length)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        type=_parse_override, help="config override NAME=VALUE (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        config = M.get_config(args.model, **dict(args.overrides))
    except ValueError as e:
        parser.error(str(e))
    s = summarize(config, args.length, args.target_length)
    print(json.dumps(s, indent=2) if args.json else format_summary(s))


if __name__ == "__main__":
    main(sys.argv[1:])
