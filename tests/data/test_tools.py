"""tools/shard_fasta.py (CLI; the pipeline: test_shard_pipeline.py), tools/show_examples.py, tools/bench_data.py."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

TOOLS = pathlib.Path(__file__).resolve().parents[2] / "tools"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shard_tool = _load("shard_fasta")


def test_shard_cli_summary_overwrite_and_errors(tmp_path, capsys):
    src = tmp_path / "in.fasta"
    src.write_text(">a desc\nMKTAYIAKQR\n>b\nLLGV\n>c\nMKTAYIAKQR\n")
    out = tmp_path / "o"
    args = ["--input", str(src), "--output_dir", str(out), "--num_shards", "16", "--dedup"]
    shard_tool.main(args)
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["records_read"] == 3 and summary["duplicates_removed"] == 1
    assert len(summary["train"]["empty_shards_not_written"]) >= 14
    assert "sharded 3 records" in captured.err                      # the human-readable last line
    with pytest.raises(SystemExit, match="not empty.*--overwrite"):
        shard_tool.main(args)
    shard_tool.main(args + ["--overwrite", "--num_shards", "2"])
    assert not list(out.glob("*-of-00016.tfrecord")) and list(out.glob("*-of-00002.tfrecord"))
    with pytest.raises(SystemExit, match="matches no file"):
        shard_tool.main(["--input", str(tmp_path / "none*.fa"), "--output_dir", str(tmp_path / "o2"),
                         "--num_shards", "2"])


def test_show_examples_json(small_tasks):
    show = _load("show_examples")
    exs = show.examples("prott5_span_denoising", small_tasks, num=3, seed=4, lengths={"inputs": 40, "targets": 40})
    assert len(exs) == 3
    for ex in exs:
        assert len(ex["source_sequence"]) == 39
        assert ex["targets"] == list(ex["source_sequence"]) + ["</s>"]
        assert ex["inputs"][-1] == "</s>"
        sentinels = [t for t in ex["inputs"] if t.startswith("<extra_id_")]
        assert sentinels == [f"<extra_id_{i}>" for i in range(6)]  # round(0.15 * 39)
    mlm = show.examples("protbert_mlm", small_tasks, num=2, seed=4, lengths={"inputs": 40})
    assert mlm[0]["inputs"][0] == "[CLS]" and mlm[0]["targets"][-1] == "[SEP]" and sum(mlm[0]["loss_weights"]) == 6
    json.dumps(exs)


@pytest.mark.slow
def test_show_examples_and_bench_cli(small_corpus):
    out = subprocess.run([sys.executable, str(TOOLS / "show_examples.py"), "--task", "prott5_span_corruption",
                          "--fasta_pattern", small_corpus, "--num", "2", "--seed", "1", "--json",
                          "--inputs_length", "64", "--targets_length", "24"],
                         capture_output=True, text=True, check=True, timeout=300)
    lines = [json.loads(x) for x in out.stdout.strip().splitlines()]
    assert len(lines) == 2 and lines[0]["targets"][0] == "<extra_id_0>"
    bench = subprocess.run([sys.executable, str(TOOLS / "bench_data.py"), "--fasta_pattern", small_corpus,
                            "--batches", "3", "--warmup_batches", "1", "--batch_size", "4", "--length", "128",
                            "--shuffle_buffer_size", "16"],
                           capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(bench.stdout)
    assert set(result["tasks"]) == {"prott5_span_denoising", "prott5_span_corruption", "protbert_mlm"}
    assert all(v["residues_per_s"] > 0 for v in result["tasks"].values())
    host = result["pod_host"]
    assert host["model"] == "prot_t5_xl" and host["assumed_mfu"] == 0.5 and host["residues_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["tasks"]["prott5_span_denoising"]["residues_per_s"] / host["residues_per_s"], rel=0.01)


def test_pod_host_consumption_from_the_model_flops():
    bench = _load("bench_data")
    host = bench.pod_host_consumption(0.5)
    from protlm import models
    flops = models.get_config("prot_t5_xl").flops_per_example({"inputs": 512, "targets": 512})
    assert host["peak_flops_per_host"] == 8 * 123e12 / 2                  # 4 v3 chips
    assert host["examples_per_s"] == pytest.approx(8 * 61.5e12 * 0.5 / flops, rel=1e-3)
    assert bench.pod_host_consumption(0.25)["residues_per_s"] == pytest.approx(host["residues_per_s"] / 2, rel=1e-3)
