"""Batch sources of the recurrent families: parallel protein streams (no TensorFlow, no seqio).

`CausalLMStreamSource` (ProtTXL) and `PermutationLMStreamSource` (ProtXLNet) are called like
every protlm batch source, `source(split, batch_size, shard_index, num_shards, repeat)`, and
return a `RowStream` of per-host numpy batches in which row `i` of batch `t+1` continues row `i`
of batch `t` (`protlm.data.streams`). The stream is a `protlm.checkpoints.DataStream`: it saves
its rows' buffered tokens and the record stream's position with each checkpoint and restores
them on resume (nothing consumed is re-read), so together with the memory saved in the
checkpoint (`TrainState.carry`) a resumed run continues as if never stopped. Each host reads its
own share of the files (or records) and fills its own rows.

From gin:
    trainer.train.data = @stream_sources.CausalLMStreamSource()
    stream_sources.CausalLMStreamSource.feature_lengths = {'inputs': 512}
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np

from protlm.data import causal_lm, plm
from protlm.data import splits as splits_lib
from protlm.data import tokens as tok
from protlm.data.streams import ProteinRecords, ProteinStreams

log = logging.getLogger(__name__)


def _default_pattern(pattern: Optional[str]) -> str:
    if pattern:
        return pattern
    env = os.environ.get("PROTLM_FASTA_PATTERN")
    if env:
        return env
    root = os.environ.get("PROTLM_DATA_ROOT") or str(
        pathlib.Path(__file__).resolve().parents[3] / "shared" / "data")
    return str(pathlib.Path(root) / "pretraining" / "combined_dedup" / "*.fasta.gz")


@dataclasses.dataclass(frozen=True)
class _StreamSource:
    """Common fields: where the proteins come from and how the splits are formed.

    Attributes:
      feature_lengths: `{"inputs": tokens per row and step}`.
      fasta_pattern: training FASTA glob (None: `$PROTLM_FASTA_PATTERN`, else the shared corpus).
      validation_fasta_pattern: separate validation FASTA (None: the 1 % hash-of-id split).
      validation_fraction: size of that split.
      seed: file order per epoch (train) and the objective's randomness.
    """

    feature_lengths: Mapping[str, int]
    fasta_pattern: Optional[str] = None
    validation_fasta_pattern: Optional[str] = None
    validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION
    seed: int = 0

    def _open(self, split, batch_size, shard_index, num_shards, repeat, encode, separator,
              batch_fn: Callable[[ProteinStreams, int], dict], reverse_rows=()) -> "RowStream":
        pattern = _default_pattern(self.fasta_pattern)

        def make(position=None):
            records = ProteinRecords(pattern, split, self.validation_fasta_pattern,
                                     self.validation_fraction, shard_index, num_shards, self.seed,
                                     repeat, position)
            return records, ProteinStreams(records, batch_size, encode, separator, reverse_rows)

        description = {"source": type(self).__name__, "split": split, "batch_size": batch_size,
                       "shard_index": shard_index, "num_shards": num_shards, "seed": self.seed,
                       "fasta_pattern": pattern, "lengths": self.lengths()}
        return RowStream(make, batch_fn, description)

    def batch_shapes(self, model_config, batch_size: int) -> dict:
        """Shapes of a batch without reading data (dry runs), as the model's family has them."""
        from protlm.models import registry  # noqa: PLC0415

        return registry.get_family(model_config).batch_shapes(
            model_config, self.lengths(), batch_size, pack=False)

    def lengths(self) -> dict[str, int]:
        return {"inputs": int(self.feature_lengths["inputs"])}


@dataclasses.dataclass(frozen=True)
class CausalLMStreamSource(_StreamSource):
    """ProtTXL batches: `decoder_input_tokens`, `decoder_target_tokens`, `decoder_loss_weights`
    (`protlm.data.causal_lm`), proteins separated by `<eos>`."""

    def __call__(self, split, batch_size, shard_index=0, num_shards=1,
                 repeat=True) -> "RowStream":
        length = int(self.feature_lengths["inputs"])
        return self._open(split, batch_size, shard_index, num_shards, repeat, tok.encode_prottxl,
                          tok.PROTTXL_EOS_ID, lambda s, t: causal_lm.stream_batch(s, t, length))


@dataclasses.dataclass(frozen=True)
class PermutationLMStreamSource(_StreamSource):
    """ProtXLNet batches (`protlm.data.plm`): XLNet's examples, rows advancing by `reuse_len`.

    Attributes (XLNet's data flags, `protlm.data.plm.PLMConfig`): reuse_len, perm_size,
    num_predict, mask_alpha, mask_beta, bi_data.
    """

    reuse_len: int = 256
    perm_size: int = 256
    num_predict: int = 85
    mask_alpha: int = 6
    mask_beta: int = 1
    bi_data: bool = True

    def plm_config(self) -> plm.PLMConfig:
        return plm.PLMConfig(seq_len=int(self.feature_lengths["inputs"]), reuse_len=self.reuse_len,
                             perm_size=self.perm_size, num_predict=self.num_predict,
                             mask_alpha=self.mask_alpha, mask_beta=self.mask_beta,
                             bi_data=self.bi_data)

    def lengths(self) -> dict[str, int]:
        return {"inputs": int(self.feature_lengths["inputs"]), "targets": self.num_predict}

    def __call__(self, split, batch_size, shard_index=0, num_shards=1,
                 repeat=True) -> "RowStream":
        cfg = self.plm_config()
        reverse = plm.bi_data_rows(batch_size, cfg.bi_data)
        first_row = shard_index * batch_size

        def batch(s, t):
            return plm.stream_batch(s, t, cfg, self.seed, first_row, reverse)

        return self._open(split, batch_size, shard_index, num_shards, repeat,
                          tok.encode_protxlnet, tok.PROTXLNET_EOD_ID, batch, reverse)


class RowStream:
    """Batches `t, t+1, ...` of parallel protein streams; a `protlm.checkpoints.DataStream`.

    Args:
      make: `make(position)` -> `(ProteinRecords, ProteinStreams)` opened at a record position
        (None: the split's start).
      batch_fn: `batch_fn(streams, t)` -> batch `t` (advances the rows).
      description: what the stream is (a saved position fits only the same description).
    """

    STATE_FILE = "row_streams.npz"
    POSITION_FILE = "record_position.json"

    def __init__(self, make, batch_fn, description: dict):
        self._make, self._batch_fn, self.description = make, batch_fn, description
        self._records, self._streams = make(None)
        self.batches_consumed = 0

    def __iter__(self) -> "RowStream":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._batch_fn(self._streams, self.batches_consumed)
        self.batches_consumed += 1
        return batch

    def save(self, directory: str) -> None:
        """The rows' buffered tokens and the record position (temporary names, then renamed)."""
        out = pathlib.Path(directory)
        tmp = out / f".{self.STATE_FILE}.tmp-{os.getpid()}.npz"
        np.savez(tmp, **self._streams.state())
        os.replace(tmp, out / self.STATE_FILE)
        tmp = out / f".{self.POSITION_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self._records.position, sort_keys=True), encoding="utf-8")
        os.replace(tmp, out / self.POSITION_FILE)

    def restore(self, directory: str, batches_consumed: int) -> None:
        """Reopen the records at the saved position and set the rows to the saved tokens.

        Raises:
          protlm.checkpoints.DataStateError: the files are missing or do not fit this stream.
        """
        from protlm.checkpoints import DataStateError  # noqa: PLC0415

        where = pathlib.Path(directory)
        try:
            position = json.loads((where / self.POSITION_FILE).read_text(encoding="utf-8"))
            with np.load(where / self.STATE_FILE) as f:
                state = {k: f[k] for k in f.files}
            self._records, self._streams = self._make(position)
            self._streams.load_state(state)
        except (OSError, ValueError, KeyError) as e:
            raise DataStateError(f"row streams in {where}: {e}") from None
        self.batches_consumed = int(batches_consumed)
        log.info("row streams resumed at batch %d (%d proteins read before)", batches_consumed,
                 self._streams.proteins_read)
