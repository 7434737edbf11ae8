"""A recurrent run's Hugging Face export against protlm, with memory, on its validation proteins.

    python tools/xl_hf_parity.py --model_dir runs/quickstart_txl --hf_dir hf/quickstart_txl

Exports the run's latest checkpoint (`protlm.hf.export.export_checkpoint`; ProtTXL and ProtXLNet
both as transformers' `XLNetLMHeadModel`), loads it with the installed transformers, reads
`--segments` consecutive validation batches of the run's own stream source (real proteins, rows
continuing across segments), runs protlm with its carried memory and transformers with `mems`,
and prints one JSON line: the largest |logit difference| over the loss-weighted positions of
every segment and the transformers version. Exit status 1 when it exceeds `--tol`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

import numpy as np


def _gin_source(model_dir: pathlib.Path):
    """The run's batch source (`tools/stream_entropy.py`, one reader of a run's gin config)."""
    spec = importlib.util.spec_from_file_location(
        "stream_entropy", pathlib.Path(__file__).with_name("stream_entropy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._gin_source(model_dir)   # pylint: disable=protected-access


def compare(model_dir: pathlib.Path, hf_dir: pathlib.Path, segments: int, rows: int) -> dict:
    """Max |logit diff| per segment between protlm (carry) and the exported model (mems)."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    from protlm import checkpoints, models  # noqa: PLC0415
    from protlm.hf import export, recurrent_parity  # noqa: PLC0415

    params, config = checkpoints.load_params(model_dir)
    if not hf_dir.exists():
        export.export_checkpoint(str(model_dir), str(hf_dir))
    family = models.get_family(config)
    model, spec = family.model(config), family.hf()
    source, _, _ = _gin_source(model_dir)
    stream = source("validation", rows, 0, 1, True)
    batches = [next(stream) for _ in range(segments)]
    # XLNet's bi_data rows (the second half read backwards, `reverse`) need transformers'
    # bi_data=True, which splits the batch the same way; the exported config has False.
    bi_data = bool(np.asarray(batches[0].get("reverse", 0)).any())
    hf = transformers.XLNetLMHeadModel.from_pretrained(hf_dir, dtype=torch.float32,
                                                       bi_data=bi_data).eval()
    diffs, _, _ = recurrent_parity.segment_logit_diffs(model, spec, params, hf, batches)
    return {"model_dir": str(model_dir), "hf_dir": str(hf_dir), "family": family.name,
            "transformers": transformers.__version__, "segments": segments, "rows": rows,
            "mem_len": config.mem_len, "bi_data": bi_data, "max_abs_logit_diff_per_segment": diffs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True, type=pathlib.Path)
    parser.add_argument("--hf_dir", required=True, type=pathlib.Path,
                        help="export here (reused when it exists)")
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--rows", type=int, default=4, help="stream rows (XLNet bi_data: even)")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    result = compare(args.model_dir, args.hf_dir, args.segments, args.rows)
    result["ok"] = max(result["max_abs_logit_diff_per_segment"]) <= args.tol
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
