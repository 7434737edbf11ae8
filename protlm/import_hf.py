"""`python -m protlm.import_hf`: a Hugging Face ProtT5 / ProtBert directory -> a protlm checkpoint.

Examples:
  python -m protlm.import_hf --hf_dir prot_t5_xl_uniref50 --output_dir runs/prot_t5_xl_u50_init
  python -m protlm.import_hf --hf_dir prot_bert --output_dir runs/prot_bert_init

Reads config.json + pytorch_model.bin or model.safetensors (sharded or not, fp32/fp16/bf16) as
Rostlab publishes them and writes MODEL_DIR/config.json + an orbax checkpoint at --step, which
`protlm.train` can start from and `protlm.embed` reads. See docs/huggingface.md.
"""
from __future__ import annotations

import argparse
import sys

from protlm import cli
from protlm.hf import importer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m protlm.import_hf", description=__doc__.split("\n")[0])
    p.add_argument("--hf_dir", required=True, help="HF model directory (config.json + weights)")
    p.add_argument("--output_dir", required=True, help="protlm MODEL_DIR to write")
    p.add_argument("--step", type=int, default=0, help="checkpoint step number to write")
    p.add_argument("--dtype", default=None,
                   help="activation dtype stored in the protlm config (default: the family's)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    overrides = {} if args.dtype is None else {"dtype": args.dtype}
    try:
        path = importer.import_checkpoint(args.hf_dir, args.output_dir, step=args.step, **overrides)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        print(f"import_hf: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    cli.run(main, "import_hf")
