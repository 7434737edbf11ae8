"""Batch sources of the recurrent families: parallel protein streams (no TensorFlow, no seqio).

`CausalLMStreamSource` (ProtTXL) and `PermutationLMStreamSource` (ProtXLNet) are called like
every protlm batch source, `source(split, batch_size, start_batch, shard_index, num_shards,
repeat)`, and yield per-host numpy batches in which row `i` of batch `t+1` continues row `i` of
batch `t` (`protlm.data.streams`). A resumed run (`start_batch = k`) replays the first `k` steps'
record requests without building batches, so it reads exactly the rows an uninterrupted run
reads; together with the memory saved in the checkpoint (`TrainState.carry`) the run continues as
if never stopped. Each host reads its own share of the files (or records) and fills its own rows.

From gin:
    trainer.train.data = @stream_sources.CausalLMStreamSource()
    stream_sources.CausalLMStreamSource.feature_lengths = {'inputs': 512}
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from typing import Optional

import numpy as np

from protlm.data import causal_lm, plm
from protlm.data import splits as splits_lib
from protlm.data import tokens as tok
from protlm.data.streams import ProteinStreams, protein_records

log = logging.getLogger(__name__)


def _default_pattern(pattern: Optional[str]) -> str:
    if pattern:
        return pattern
    import os  # noqa: PLC0415
    import pathlib  # noqa: PLC0415

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

    def _streams(self, split, batch_size, shard_index, num_shards, repeat, encode, separator,
                 reverse_rows=()):
        records = protein_records(_default_pattern(self.fasta_pattern), split,
                                  self.validation_fasta_pattern, self.validation_fraction,
                                  shard_index, num_shards, self.seed, repeat)
        return ProteinStreams(records, batch_size, encode, separator, reverse_rows)

    def _batches(self, streams, batch_fn, advance_fn, start_batch: int
                 ) -> Iterator[dict[str, np.ndarray]]:
        for step in range(start_batch):     # replay the record requests (reading + tokenising)
            advance_fn(streams, step)
        if start_batch:
            log.info("stream resumed at batch %d (%d proteins re-read)", start_batch,
                     streams.proteins_read)
        step = start_batch
        while True:
            yield batch_fn(streams, step)
            step += 1

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

    def __call__(self, split, batch_size, start_batch=0, shard_index=0, num_shards=1,
                 repeat=True) -> Iterator[dict[str, np.ndarray]]:
        streams = self._streams(split, batch_size, shard_index, num_shards, repeat,
                                tok.encode_prottxl, tok.PROTTXL_EOS_ID)
        length = int(self.feature_lengths["inputs"])
        return self._batches(streams, lambda s, t: causal_lm.stream_batch(s, t, length),
                             lambda s, t: causal_lm.advance(s, t, length), start_batch)


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

    def __call__(self, split, batch_size, start_batch=0, shard_index=0, num_shards=1,
                 repeat=True) -> Iterator[dict[str, np.ndarray]]:
        cfg = self.plm_config()
        reverse = plm.bi_data_rows(batch_size, cfg.bi_data)
        streams = self._streams(split, batch_size, shard_index, num_shards, repeat,
                                tok.encode_protxlnet, tok.PROTXLNET_EOD_ID, reverse)
        first_row = shard_index * batch_size

        def batch(s, t):
            return plm.stream_batch(s, t, cfg, self.seed, first_row, reverse)

        return self._batches(streams, batch, lambda s, t: plm.advance(s, t, cfg), start_batch)
