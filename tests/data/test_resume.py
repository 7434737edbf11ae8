"""Resume without replay: the records the source yields after a restore, and the batches after it.

A counting tap on the source's record decoder (`protlm.data.shards.decode`) counts the records the
source yields. A stream resumed at batch N from its saved iterator state must read only what the
next batches need (no replay of the N batches before the saved position) and give exactly the
batches an uninterrupted stream gives, on one host and per host of two.
"""
import itertools
import threading

import numpy as np
import pytest
import tensorflow as tf

from protlm.data import shards
from protlm.data.pipeline import open_stream

TASK, LENGTHS, BATCH = "protbert_mlm", {"inputs": 64}, 4
SAVE_AT, AFTER = 60, 30


class RecordCounter:
    """Counts the records that pass the source's decoder (thread-safe: tf.data maps in parallel)."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def _tick(self, record_id):
        with self._lock:
            self.count += 1
        return record_id

    def decode(self, serialized, _decode=shards.decode):
        out = dict(_decode(serialized))
        out["id"] = tf.py_function(self._tick, [out["id"]], tf.string)
        out["id"].set_shape([])
        return out


class _TapOptions(tf.data.Options):
    """The pipeline's options, but saving a state whose graph holds the (stateless) counting tap."""

    def __init__(self):
        super().__init__()
        self.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE


@pytest.fixture()
def counter(monkeypatch):
    c = RecordCounter()
    monkeypatch.setattr(shards, "decode", c.decode)
    monkeypatch.setattr(tf.data, "Options", _TapOptions)
    return c


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def _open(shard_index=0, num_shards=1):
    return open_stream(TASK, LENGTHS, BATCH, seed=3, pack=False, shard_index=shard_index, num_shards=num_shards)


@pytest.mark.parametrize("num_hosts", [1, 2])
def test_resume_reads_no_records_before_the_saved_position(small_tasks, counter, tmp_path, num_hosts):
    for host in range(num_hosts):
        counter.count = 0
        full = list(itertools.islice(_open(host, num_hosts), SAVE_AT + AFTER))
        read_full = counter.count

        counter.count = 0
        first = _open(host, num_hosts)
        list(itertools.islice(first, SAVE_AT))
        state = tmp_path / f"host{host}"
        state.mkdir()
        first.save(str(state))
        first.close()
        read_before = counter.count
        assert read_before >= SAVE_AT * BATCH          # what a replay would have to read again

        counter.count = 0
        resumed = _open(host, num_hosts)
        resumed.restore(str(state))
        after = list(itertools.islice(resumed, AFTER))
        read_after = counter.count
        _same(after, full[SAVE_AT:])
        # The resumed stream reads what the uninterrupted one read after the saved position and
        # nothing before it (a replay would read `read_before` records again first).
        assert 0 < read_after <= read_full - read_before + 32, (read_full, read_before, read_after)
        assert read_after < read_full - SAVE_AT * BATCH


def test_host_states_are_separate(small_tasks, tmp_path):
    """Host 1's saved state does not fit host 0's stream silently: different records follow."""
    host0, host1 = _open(0, 2), _open(1, 2)
    next(host0), next(host1)
    host1.save(str(tmp_path))
    expected = next(host1)
    wrong = _open(0, 2)
    wrong.restore(str(tmp_path))       # same pipeline graph: restorable, but host 1's position
    _same([next(wrong)], [expected])
    assert host0.description != host1.description  # what the checkpoint layer compares
