"""The optional seqio cache made by Beam (`seqio.scripts.cache_tasks_main`): tokens only, masks afresh."""
import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

from protlm.data import shard_pipeline, shards, tokens as tok
from protlm.data.pipeline import get_task, open_stream
from protlm.data.tasks import register_tasks

TASK = "prott5_span_denoising"
LENGTHS = {"inputs": 64, "targets": 64}


@pytest.mark.slow
def test_beam_cache_holds_tokens_and_every_epoch_masks_afresh(small_corpus, tmp_path):
    shard_dir = tmp_path / "shards"
    shard_pipeline.run(shard_pipeline.ShardConfig(inputs=(small_corpus,), output_dir=str(shard_dir), num_shards=4))
    cache = tmp_path / "cache"
    env = dict(os.environ, PROTLM_FASTA_PATTERN=str(shard_dir))
    subprocess.run([sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=tasks",
                    f"--tasks={TASK}", f"--output_cache_dir={cache}", "--min_shards=2",
                    "--pipeline_options=--runner=FnApiRunner"], env=env, check=True, capture_output=True,
                   timeout=900)
    info = json.loads((cache / TASK / "info.train.json").read_text())
    assert set(info["features"]) == {"id", "source_tokens"}       # tokenised, not masked

    register_tasks(fasta_pattern=str(shard_dir), shuffle_buffer_size=16)
    seqio.add_global_cache_dirs([str(cache)])
    try:
        task = get_task(TASK)
        ds = task.get_dataset(sequence_length=LENGTHS, split="train", use_cached=True, shuffle=False,
                              num_epochs=2, try_in_mem_cache=False)
        seen = collections.defaultdict(list)
        for ex in ds.as_numpy_iterator():
            seen[ex["id"].decode()].append(ex)
        records = dict(shards.read_records(shards.split_files(str(shard_dir), "train")))
        assert set(seen) == set(records) and all(len(v) == 2 for v in seen.values())
        changed = 0
        for record_id, (first, second) in seen.items():
            whole = tok.encode_prott5(records[record_id])
            crop = first["source_tokens"]
            assert tok.decode_prott5(crop) in tok.decode_prott5(whole)   # a window of the record
            changed += not np.array_equal(first["inputs"], second["inputs"])
        assert changed > 0.9 * len(seen)                              # new crop and masks each epoch
        stream = open_stream(TASK, LENGTHS, 4, use_cached=True)
        batch = next(stream)
        assert batch["encoder_input_tokens"].shape == (4, 64) and stream.description["use_cached"]
    finally:
        register_tasks()
