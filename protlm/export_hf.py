"""`python -m protlm.export_hf`: a protlm checkpoint -> a Hugging Face transformers directory.

Examples:
  python -m protlm.export_hf --checkpoint_dir runs/prot_t5_xl --output_dir hf/prot_t5_xl
  python -m protlm.export_hf --checkpoint_dir runs/prot_t5_xl --output_dir hf/prot_t5_xl_half_enc \
      --encoder_only --dtype float16
  python -m protlm.export_hf --checkpoint_dir runs/prot_bert --step 100000 --output_dir hf/prot_bert

Each family writes its Hugging Face class (`--part`; ProtT5: T5ForConditionalGeneration, or
T5EncoderModel with --encoder_only; ProtBert: BertForMaskedLM), with config.json, model.safetensors (sharded above --max_shard_size) and tokenizer
files. See docs/huggingface.md.
"""
from __future__ import annotations

import argparse
import sys

from protlm import cli
from protlm.errors import CheckpointError
from protlm.hf import export, safetensors_writer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m protlm.export_hf", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint_dir", required=True, help="protlm MODEL_DIR (config.json + checkpoints/)")
    p.add_argument("--step", type=int, default=None,
                   help="checkpoint step (default: the latest readable; a damaged newer one is skipped "
                        "with a warning)")
    p.add_argument("--output_dir", required=True, help="HF directory to create")
    p.add_argument("--part", default=None,
                   help="which model of the family to write (ProtT5: model | encoder); default: "
                        "the family's pretraining model, or what the checkpoint holds")
    p.add_argument("--encoder_only", action="store_true",
                   help="shorthand for --part encoder (ProtT5: T5EncoderModel)")
    p.add_argument("--dtype", default="float32", choices=sorted(export.DTYPES))
    p.add_argument("--max_shard_size", default="5GB",
                   help="shard the safetensors above this size (e.g. 5GB, 500MB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output_dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.setup_logging()
    args = parse_args(argv)
    part = "encoder" if args.encoder_only else args.part
    try:
        out = export.export_checkpoint(
            args.checkpoint_dir, args.output_dir, step=args.step, part=part,
            dtype=args.dtype, max_shard_bytes=safetensors_writer.parse_size(args.max_shard_size),
            overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, CheckpointError) as e:
        print(f"export_hf: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    cli.run(main, "export_hf")
