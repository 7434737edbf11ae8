"""Apache Beam pipeline: FASTA globs -> train/validation TFRecord shards (`protlm.data.shards`).

The one implementation of the corpus rules of `protlm.data.splits`, run by `tools/shard_fasta.py`
(locally by default, on the DirectRunner's engine `FnApiRunner`; `--runner=DataflowRunner|FlinkRunner|SparkRunner` and their options pass
through for a cluster) and in-process for plain FASTA globs given to the seqio tasks
(`protlm.data.sources`, no dedup or exclusion there):

  ReadFasta (one file per worker, validated by `protlm.data.fasta`)
  -> [exclusion by identity: CoGroupByKey on the record id with the hit ids of a search tool]
  -> [dedup / exact exclusion: CoGroupByKey on `sequence_key` with the evaluation sequences;
      a group with an evaluation sequence is dropped, otherwise its first occurrence is kept]
  -> (split, shard) by the id hash -> GroupByKey -> one TFRecord file per shard, input order.

Nothing is held in one process's memory but one shard at write time. Output is written into a
staging directory beside OUT and moved into place only when every shard is complete; a non-empty
OUT is refused unless `overwrite`, which swaps the new shards in and removes the old ones.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from typing import Iterable, Sequence

from protlm.data import exclusions, shards, splits
from protlm.data.fasta import FastaFormatError, expand_paths, read_fasta

log = logging.getLogger(__name__)
METRICS_NAMESPACE = "protlm_shards"
COUNTERS = ("records_read", "residues_read", "duplicates_removed", "excluded_removed",
            "excluded_by_identity")
_STATS_FILE = "_shard_stats.json"


@dataclasses.dataclass(frozen=True)
class ShardConfig:
    """What to shard and how (every field is recorded in the shard report).

    Attributes:
      inputs: FASTA files/globs (local or any `tf.io.gfile` scheme such as gs://).
      output_dir: the shard directory to write.
      num_shards: train shards (a few hundred MB each is a good size; at least the number of hosts).
      num_validation_shards: validation shards.
      validation_fraction: size of the id-hash held-out split.
      dedup: drop exact duplicate sequences (the first occurrence in input order is kept).
      exclude: evaluation-set FASTA/CSV files whose sequences are dropped (exact identity).
      exclude_csv_column: the sequence column of CSV exclusion files.
      exclude_hits: tabular search hits (`protlm.data.exclusions.identity_hits`) of training records
        against evaluation sets; records with a hit at `exclude_min_identity` or more are dropped.
      exclude_min_identity: identity threshold (fraction) for `exclude_hits`.
      overwrite: replace the shards of a non-empty `output_dir`.
    """

    inputs: tuple[str, ...]
    output_dir: str
    num_shards: int
    num_validation_shards: int = 1
    validation_fraction: float = splits.DEFAULT_VALIDATION_FRACTION
    dedup: bool = False
    exclude: tuple[str, ...] = ()
    exclude_csv_column: str = "input"
    exclude_hits: tuple[str, ...] = ()
    exclude_min_identity: float = 0.0
    overwrite: bool = False

    def shards_of(self, split: str) -> int:
        return self.num_shards if split == "train" else self.num_validation_shards


# ----------------------------------------------------------------------------------- transforms
def import_beam():
    """`apache_beam`, imported without the root-logger side effects of its import.

    Importing Beam logs an "apitools not found" warning through the root logger, which also
    installs a root handler when none exists; a temporary NullHandler and filter prevent both.
    """
    root, quiet = logging.getLogger(), logging.NullHandler()
    drop = logging.Filter()
    drop.filter = lambda record: "apitools not found" not in record.getMessage()  # type: ignore[method-assign]
    root.addHandler(quiet)
    root.addFilter(drop)
    try:
        import apache_beam  # pylint: disable=import-outside-toplevel
    finally:
        root.removeFilter(drop)
        root.removeHandler(quiet)
    return apache_beam


def _counter(name: str):
    return import_beam().metrics.Metrics.counter(METRICS_NAMESPACE, name)


def read_file(item: tuple[int, str]) -> Iterable[tuple]:
    """(file index, path) -> records (file index, record index, id, sequence)."""
    file_index, path = item
    read, residues = _counter("records_read"), _counter("residues_read")
    n = 0
    for n, rec in enumerate(read_fasta(path), 1):
        read.inc()
        residues.inc(len(rec.sequence))
        yield file_index, n - 1, rec.id, rec.sequence
    log.info("read %s: %d records", path, n)


def drop_identity_hits(group) -> Iterable[tuple]:
    """CoGroupByKey result on the record id: the records unless the id has a hit."""
    _, parts = group
    records = list(parts["records"])
    if any(True for _ in parts["hits"]):
        _counter("excluded_by_identity").inc(len(records))
        return
    yield from records


def resolve_sequence_group(group, dedup: bool) -> Iterable[tuple]:
    """CoGroupByKey result on `sequence_key`: dropped when excluded, else the first occurrence
    (with `dedup`) or every record."""
    _, parts = group
    records = list(parts["records"])
    if not records:
        return
    if any(True for _ in parts["excluded"]):
        _counter("excluded_removed").inc(len(records))
        return
    if dedup and len(records) > 1:
        _counter("duplicates_removed").inc(len(records) - 1)
        records = [splits.first_occurrence(records)]
    yield from records


def shard_key(record: tuple, config: ShardConfig):
    """((split, shard index), record) by the id-hash rules."""
    split = splits.split_of(record[2], config.validation_fraction)
    return (split, splits.shard_of(record[2], config.shards_of(split))), record


def write_shard(group, staging_dir: str, config: ShardConfig) -> Iterable[dict]:
    """One shard's records -> `staging_dir/<shard name>` (temporary name, then rename)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    (split, index), records = group
    records = sorted(records, key=lambda r: (r[0], r[1]))
    name = shards.shard_name(split, index, config.shards_of(split))
    final = os.path.join(staging_dir, name) if "://" not in staging_dir else f"{staging_dir}/{name}"
    tmp = final + f".tmp-{uuid.uuid4().hex}"
    with tf.io.TFRecordWriter(tmp) as writer:
        for _, _, record_id, sequence in records:
            writer.write(shards.encode(record_id, sequence))
    tf.io.gfile.rename(tmp, final, overwrite=True)
    yield {"split": split, "index": index, "file": name, "records": len(records),
           "residues": sum(len(r[3]) for r in records)}


def write_stats(stats: list[dict], staging_dir: str) -> None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    with tf.io.gfile.GFile(f"{staging_dir}/{_STATS_FILE}", "w") as fh:
        json.dump(sorted(stats, key=lambda s: (s["split"], s["index"])), fh)


def build(pipeline, config: ShardConfig, files: Sequence[str], exclude_files: Sequence[str],
          hit_files: Sequence[str], staging_dir: str):
    """Adds the sharding transforms to `pipeline`; the last step writes the shard statistics."""
    beam = import_beam()

    records = (pipeline
               | "ListFasta" >> beam.Create(list(enumerate(files)))
               | "SpreadFiles" >> beam.Reshuffle()
               | "ReadFasta" >> beam.FlatMap(read_file))
    if hit_files:
        hits = (pipeline
                | "ListHits" >> beam.Create(list(hit_files))
                | "ReadHits" >> beam.FlatMap(lambda p: ((i, None) for i in
                                                        exclusions.identity_hits(p, config.exclude_min_identity))))
        records = ({"records": records | "ById" >> beam.Map(lambda r: (r[2], r)), "hits": hits}
                   | "JoinHits" >> beam.CoGroupByKey()
                   | "DropHits" >> beam.FlatMap(drop_identity_hits))
    if config.dedup or exclude_files:
        excluded = (pipeline
                    | "ListExcluded" >> beam.Create(list(exclude_files))
                    | "ReadExcluded" >> beam.FlatMap(lambda p: ((splits.sequence_key(s), None) for s in
                                                                exclusions.evaluation_sequences(p, config.exclude_csv_column))))
        records = ({"records": records | "BySequence" >> beam.Map(lambda r: (splits.sequence_key(r[3]), r)),
                    "excluded": excluded}
                   | "JoinSequences" >> beam.CoGroupByKey()
                   | "Resolve" >> beam.FlatMap(resolve_sequence_group, config.dedup))
    return (records
            | "AssignShard" >> beam.Map(shard_key, config)
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.FlatMap(write_shard, staging_dir, config)
            | "CollectStats" >> beam.combiners.ToList()
            | "WriteStats" >> beam.Map(write_stats, staging_dir))


# --------------------------------------------------------------------------------- output dir
def _strip(path: str) -> str:
    return path.rstrip("/") or path


def existing_entries(output_dir: str) -> list[str]:
    """Names in `output_dir` ([] when it does not exist)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if not tf.io.gfile.exists(output_dir):
        return []
    return sorted(tf.io.gfile.listdir(output_dir))


def refuse_non_empty(output_dir: str, overwrite: bool) -> None:
    """Raises FileExistsError for a non-empty `output_dir` unless `overwrite`."""
    entries = existing_entries(output_dir)
    if entries and not overwrite:
        raise FileExistsError(
            f"{output_dir} is not empty ({len(entries)} entries, e.g. {entries[0]!r}); pass --overwrite "
            "to replace its shards (the old ones are removed only once the new ones are complete), "
            "or choose another --output_dir")


def _move_dir(src: str, dst: str) -> None:
    """Renames a directory: one atomic rename locally; file by file (report last) on object stores."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if "://" not in src:
        os.rename(src, dst)
        return
    names = sorted(tf.io.gfile.listdir(src), key=lambda n: n == shards.REPORT_FILE)
    tf.io.gfile.makedirs(dst)
    for name in names:
        tf.io.gfile.rename(f"{src}/{name}", f"{dst}/{name}")
    tf.io.gfile.rmtree(src)


def swap_in(staging_dir: str, output_dir: str, overwrite: bool) -> None:
    """Moves the complete `staging_dir` to `output_dir`, replacing an old one when `overwrite`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    refuse_non_empty(output_dir, overwrite)
    old = None
    if tf.io.gfile.exists(output_dir):
        old = f"{output_dir}.old-{uuid.uuid4().hex[:8]}"
        _move_dir(output_dir, old)
    _move_dir(staging_dir, output_dir)
    if old is not None:
        tf.io.gfile.rmtree(old)


def _original_error(error: BaseException) -> BaseException | None:
    """The input error a runner wrapped (Beam re-raises worker errors as RuntimeError)."""
    seen = error
    while seen is not None:
        if isinstance(seen, (FastaFormatError, exclusions.ExclusionFormatError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# The local default: the DirectRunner's Python engine named directly. (`DirectRunner` itself first
# tries the Prism runner, a binary it downloads from GitHub at run time.)
LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(pipeline_args: Sequence[str]):
    """Beam options: the local runner unless `--runner` is given; the rest passes through."""
    import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel

    args = list(pipeline_args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append(f"--runner={LOCAL_RUNNER}")
    return PipelineOptions(args)


def run(config: ShardConfig, pipeline_args: Sequence[str] = ()) -> dict:
    """Runs the pipeline and moves the shards into `config.output_dir`; returns the report.

    Raises:
      FileNotFoundError: an input or exclusion pattern matches nothing.
      FileExistsError: `output_dir` is not empty and `overwrite` is False.
      FastaFormatError, ExclusionFormatError: malformed input (one line naming file and line).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    beam = import_beam()
    from apache_beam.metrics.metric import MetricsFilter  # pylint: disable=import-outside-toplevel

    if config.num_shards < 1 or config.num_validation_shards < 1:
        raise ValueError("--num_shards and --num_validation_shards must be >= 1")
    splits._check_fraction(config.validation_fraction)  # pylint: disable=protected-access
    output_dir = _strip(config.output_dir)
    refuse_non_empty(output_dir, config.overwrite)
    files = expand_paths(list(config.inputs))
    exclude_files = [f for p in config.exclude for f in expand_paths(p)]
    hit_files = [f for p in config.exclude_hits for f in expand_paths(p)]
    staging = f"{output_dir}.tmp-{uuid.uuid4().hex[:8]}"
    tf.io.gfile.makedirs(staging)
    t0 = time.perf_counter()
    beam_log = logging.getLogger("apache_beam")
    level = beam_log.level
    try:
        pipeline = beam.Pipeline(options=pipeline_options(pipeline_args))
        build(pipeline, config, files, exclude_files, hit_files, staging)
        # A failing worker is logged by Beam with its traceback and then raised here: keep the raise.
        beam_log.setLevel(logging.CRITICAL)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        finally:
            beam_log.setLevel(level)
        seconds = time.perf_counter() - t0
        counters = {r.key.metric.name: r.committed for r in result.metrics().query(
            MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]}
        report = _report(config, files, staging, counters, seconds)
        with tf.io.gfile.GFile(f"{staging}/{shards.REPORT_FILE}", "w") as fh:
            json.dump(report, fh, indent=1)
        swap_in(staging, output_dir, config.overwrite)
    except BaseException as e:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
        original = _original_error(e)
        if original is not None and original is not e:
            raise original from None
        raise
    return report


def _report(config: ShardConfig, files: Sequence[str], staging: str, counters: dict,
            seconds: float) -> dict:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    stats_path = f"{staging}/{_STATS_FILE}"
    stats = []
    if tf.io.gfile.exists(stats_path):   # absent when no record survived
        with tf.io.gfile.GFile(stats_path) as fh:
            stats = json.load(fh)
        tf.io.gfile.remove(stats_path)
    report = {name: int(counters.get(name, 0)) for name in COUNTERS}
    for split in splits.SPLITS:
        mine = [s for s in stats if s["split"] == split]
        written = {s["index"] for s in mine}
        report[split] = {
            "records": sum(s["records"] for s in mine),
            "residues": sum(s["residues"] for s in mine),
            "files": [s["file"] for s in mine],
            "records_per_shard": {s["file"]: s["records"] for s in mine},
            "empty_shards_not_written": [i for i in range(config.shards_of(split)) if i not in written],
        }
    report["seconds"] = round(seconds, 2)
    report["residues_per_second"] = round(report["residues_read"] / max(seconds, 1e-9))
    report["config"] = {**dataclasses.asdict(config), "input_files": list(files)}
    return report


def summary_line(report: dict) -> str:
    """One human-readable line for the end of a run."""
    return (f"sharded {report['records_read']:,} records ({report['residues_read']:,} residues) in "
            f"{report['seconds']:.1f} s ({report['residues_per_second']:,} residues/s): "
            f"train {report['train']['records']:,} in {len(report['train']['files'])} files, "
            f"validation {report['validation']['records']:,} in {len(report['validation']['files'])} files; "
            f"removed {report['duplicates_removed']:,} duplicates, {report['excluded_removed']:,} "
            f"evaluation-set sequences, {report['excluded_by_identity']:,} by identity")
