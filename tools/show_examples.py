"""Print pipeline examples of a task: the public window onto what the model is trained on.

  python tools/show_examples.py --task prott5_span_denoising --fasta_pattern 'data/*.fasta.gz' \
      --num 3 --seed 0 --json

With --json: one JSON object per line,
  {"index", "id", "source_sequence" (the cropped, tokenized residues), "inputs": ["M","K","<extra_id_0>",...],
   "targets": [...], "loss_weights": [...] (MLM only)}.
Without: a readable block per example. Examples come in file order (`--shuffle` for the training
order); `--seed` drives cropping and masking exactly as in training.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

_DEFAULT_LENGTHS = {"prott5_span_denoising": (512, 512), "prott5_span_corruption": (512, 128), "protbert_mlm": (512, None)}


def default_lengths(task: str) -> dict[str, int]:
    base = next((k for k in _DEFAULT_LENGTHS if task.startswith(k)), "prott5_span_denoising")
    inputs, targets = _DEFAULT_LENGTHS[base]
    return {"inputs": inputs} if targets is None else {"inputs": inputs, "targets": targets}


def examples(task: str, fasta_pattern: str | None, num: int, seed: int, split: str = "train",
             lengths: dict[str, int] | None = None, shuffle: bool = False) -> list[dict]:
    """The first `num` examples of `task` as JSON-able dicts."""
    from protlm.data.tasks import register_tasks  # pylint: disable=import-outside-toplevel
    import seqio  # pylint: disable=import-outside-toplevel

    register_tasks(fasta_pattern=fasta_pattern, shuffle_buffer_size=256)
    task_obj = seqio.get_mixture_or_task(task)
    lengths = lengths or default_lengths(task)
    ds = task_obj.get_dataset(sequence_length=lengths, split=split, shuffle=shuffle, seed=seed, num_epochs=1)
    out = []
    for i, ex in enumerate(itertools.islice(ds.as_numpy_iterator(), num)):
        vocab = task_obj.output_features["inputs"].vocabulary
        item = {
            "index": i,
            "id": ex["id"].decode("utf-8"),
            "source_sequence": "".join(vocab.id_to_piece(ex["source_tokens"])),
            "inputs": vocab.id_to_piece(ex["inputs"]),
            "targets": vocab.id_to_piece(ex["targets"]),
        }
        if "loss_weights" in ex:
            item["loss_weights"] = ex["loss_weights"].tolist()
        out.append(item)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--fasta_pattern", default=None, help="FASTA glob (default: the task's configured corpus)")
    parser.add_argument("--num", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train", choices=("train", "validation"))
    parser.add_argument("--inputs_length", type=int, default=None)
    parser.add_argument("--targets_length", type=int, default=None)
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    lengths = default_lengths(args.task)
    if args.inputs_length:
        lengths["inputs"] = args.inputs_length
    if args.targets_length and "targets" in lengths:
        lengths["targets"] = args.targets_length
    for ex in examples(args.task, args.fasta_pattern, args.num, args.seed, args.split, lengths, args.shuffle):
        if args.json:
            print(json.dumps(ex))
        else:
            print(f"#{ex['index']} {ex['id']} ({len(ex['source_sequence'])} residues)\n"
                  f"  source : {ex['source_sequence']}\n  inputs : {' '.join(ex['inputs'])}\n"
                  f"  targets: {' '.join(ex['targets'])}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
