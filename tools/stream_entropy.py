"""Unigram entropy of the tokens a recurrent run's evaluation predicts, beside its eval loss.

    python tools/stream_entropy.py --model_dir runs/quickstart_txl

Rebuilds the validation batches exactly as `protlm.trainer.evaluate` reads them (the run's gin
config: batch source, batch size, EVAL_BATCHES), counts the loss-weighted target tokens and prints
one JSON line: their unigram entropy in nats (the loss of the best constant predictor of exactly
those tokens) and the run's last validation loss. A model that learned anything beyond the
residue composition is below it.
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import pathlib
import sys

import numpy as np


def _gin_source(model_dir: pathlib.Path):
    import gin  # noqa: PLC0415

    from protlm import trainer  # noqa: PLC0415

    gin.parse_config_file(str(model_dir / "config.gin"))
    data = gin.get_bindings(trainer.train)["data"]
    evaluation = gin.get_bindings(trainer.EvalConfig)
    return (data, int(gin.query_parameter("%BATCH_SIZE")),
            int(evaluation["num_batches"]))


def unigram_entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of the empirical distribution `counts / counts.sum()`
    (`tools/residue_entropy.py`'s `entropy_nats`, one implementation)."""
    spec = importlib.util.spec_from_file_location(
        "residue_entropy", pathlib.Path(__file__).with_name("residue_entropy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return float(mod.entropy_nats(collections.Counter(dict(enumerate(counts.tolist())))))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_dir", required=True)
    args = parser.parse_args(argv)
    model_dir = pathlib.Path(args.model_dir)
    source, batch_size, num_batches = _gin_source(model_dir)
    from protlm import checkpoints, models  # noqa: PLC0415

    config = checkpoints.load_config(model_dir)
    model = models.get_model(config)
    counts = np.zeros(config.vocab_size, np.int64)
    it = source("validation", batch_size, 0, 1, True)
    for _ in range(num_batches):
        batch = next(it)
        targets = np.asarray(batch[model.target_key])
        weights = np.asarray(batch[model.weights_key]) > 0
        counts += np.bincount(targets[weights], minlength=config.vocab_size)
    lines = (model_dir / "metrics" / "eval.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    print(json.dumps({"model_dir": str(model_dir), "eval_tokens": int(counts.sum()),
                      "unigram_entropy": unigram_entropy(counts), "eval_step": last.get("step"),
                      "eval_loss": last.get("loss")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
