"""Registration of the pretraining seqio tasks (`import tasks` calls `register_tasks()`).

Tasks (each on train / validation splits):
  prott5_span_denoising   ProtT5 objective (15 % single residues -> unique sentinels, full target)
  prott5_span_corruption  classic T5 span corruption (sentinel-only targets), for experiments
  protbert_mlm            BERT MLM, 15 % selected, 80/10/10, encoder-only
  protalbert_mlm          the same MLM on ProtAlbert's vocabulary (no sentence-order prediction)
and the same four with suffixes `_uniref50`, `_uniref100`, `_bfd`.

Where the data comes from (resolved when a dataset is built, not at import): each pattern is the
shard directory of `tools/shard_fasta.py` (TFRecord shards, read natively and checkpointably), shard
files, or a plain FASTA glob (converted once into shards, `protlm.data.sources`).
  base tasks:   `fasta_pattern` argument, else `$PROTLM_FASTA_PATTERN`, else the shared corpus
                `$PROTLM_DATA_ROOT/pretraining/combined_dedup/*.fasta.gz` with `$PROTLM_DATA_ROOT`
                defaulting to `../shared/data` beside the repository.
  `_uniref50`:  `$PROTLM_UNIREF50`  (e.g. gs://BUCKET/uniref50_shards from tools/shard_fasta.py)
  `_uniref100`: `$PROTLM_UNIREF100`
  `_bfd`:       `$PROTLM_BFD`
Validation: `validation_fasta_pattern` / `$PROTLM_FASTA_PATTERN_VALIDATION` / `$PROTLM_UNIREF50_VALIDATION`
(etc.) when set; otherwise the shards' validation split (for a FASTA glob the 1 % hash-of-id held-out
split, `protlm.data.splits`).

From gin (dynamic registration):
  import protlm.data.tasks
  protlm.data.tasks.register_tasks.fasta_pattern = "gs://my-bucket/uniref50_shards"
and call `register_tasks()` (the trainer does) before the task is looked up.
"""
from __future__ import annotations

import pathlib
from typing import Mapping

import seqio

from protlm.data import preprocessors as prep
from protlm.data import splits as splits_lib
from protlm.data.sources import PatternLike, ProteinDataSource, env_pattern
from protlm.data.vocabularies import ProtAlbertVocabulary, ProtBertVocabulary, ProtT5Vocabulary

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS_SUBPATH = "pretraining/combined_dedup/*.fasta.gz"
OBJECTIVES = ("prott5_span_denoising", "prott5_span_corruption", "protbert_mlm", "protalbert_mlm")
# suffix -> environment variable holding that corpus' FASTA pattern.
CORPORA = {"": "PROTLM_FASTA_PATTERN", "_uniref50": "PROTLM_UNIREF50", "_uniref100": "PROTLM_UNIREF100", "_bfd": "PROTLM_BFD"}
TASK_NAMES = tuple(obj + suffix for suffix in CORPORA for obj in OBJECTIVES)
DEFAULT_SHUFFLE_BUFFER_SIZE = 4096


def default_corpus_pattern() -> str:
    """The shared pretraining corpus: `$PROTLM_DATA_ROOT` or ../shared/data beside the repository."""
    import os  # pylint: disable=import-outside-toplevel

    root = os.environ.get("PROTLM_DATA_ROOT") or str(REPO_ROOT.parent / "shared" / "data")
    return str(pathlib.Path(root) / CORPUS_SUBPATH)


def _t5_features(vocab: ProtT5Vocabulary) -> dict[str, seqio.Feature]:
    return {"inputs": seqio.Feature(vocab, add_eos=True), "targets": seqio.Feature(vocab, add_eos=True)}


def _bert_features(vocab: ProtBertVocabulary) -> dict[str, seqio.Feature]:
    return {
        "inputs": seqio.Feature(vocab, add_eos=False),
        "targets": seqio.Feature(vocab, add_eos=False),
        "loss_weights": seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False),
    }


def _add(name: str, source: seqio.DataSource, features, objective, buffer: int) -> None:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=source,
        output_features=features,
        preprocessors=[prep.tokenize_sequence, seqio.CacheDatasetPlaceholder(), objective],
        shuffle_buffer_size=buffer,
    )


def register_tasks(
    fasta_pattern: PatternLike = None,
    validation_fasta_pattern: PatternLike = None,
    validation_fraction: float = splits_lib.DEFAULT_VALIDATION_FRACTION,
    rare_residue_map: Mapping[str, str] | None = None,
    noise_density: float = prep.DEFAULT_NOISE_DENSITY,
    mean_noise_span_length: float = prep.DEFAULT_MEAN_NOISE_SPAN_LENGTH,
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER_SIZE,
) -> tuple[str, ...]:
    """(Re)registers every pretraining task; returns the names.

    Args:
      fasta_pattern: shard directory, shard files or FASTA glob/list (or callable) for the base tasks;
        None = env/default (module doc).
      validation_fasta_pattern: separate validation set for the base tasks; None = env var or the
        shards' validation split.
      validation_fraction: hash held-out split size when there is no validation pattern.
      rare_residue_map: tokenizer policy for U Z O B (None = ProtTrans: all -> X).
      noise_density: ProtT5 masked fraction / BERT selected fraction / span corruption density.
      mean_noise_span_length: span corruption only.
      shuffle_buffer_size: example shuffle buffer of each task.
    """
    t5_vocab = ProtT5Vocabulary(rare_residue_map)
    bert_vocab = ProtBertVocabulary(rare_residue_map)
    objectives = {
        "prott5_span_denoising": (_t5_features(t5_vocab), prep.with_options(prep.prott5_span_denoising, noise_density=noise_density)),
        "prott5_span_corruption": (_t5_features(t5_vocab), prep.with_options(
            prep.span_corruption, noise_density=noise_density, mean_noise_span_length=mean_noise_span_length)),
        "protbert_mlm": (_bert_features(bert_vocab), prep.with_options(prep.bert_mlm, select_fraction=noise_density)),
        "protalbert_mlm": (_bert_features(ProtAlbertVocabulary(rare_residue_map)),
                           prep.with_options(prep.protalbert_mlm, select_fraction=noise_density)),
    }
    for suffix, var in CORPORA.items():
        if suffix == "":
            train = fasta_pattern if fasta_pattern is not None else env_pattern(var, default_corpus_pattern())
            validation = validation_fasta_pattern if validation_fasta_pattern is not None else env_pattern(f"{var}_VALIDATION")
        else:
            train, validation = env_pattern(var), env_pattern(f"{var}_VALIDATION")
        hint = (f"Set ${var} to a FASTA glob or the shard directory written by tools/shard_fasta.py "
                "(local or gs://).")
        source = ProteinDataSource(train, validation, validation_fraction, missing_pattern_hint=hint)
        for objective, (features, fn) in objectives.items():
            _add(objective + suffix, source, features, fn, shuffle_buffer_size)
    return TASK_NAMES
