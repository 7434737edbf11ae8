"""protlm.embed under concurrency and wrong outputs (issue 15 items 2, 5, 14), what its command
line prints, `--step`, and the ProtTrans-style h5 keys; tiny random ProtT5 on real DeepLoc proteins."""
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from protlm import checkpoints, embed, models
from protlm.downstream import datasets
from tests.trainer import subproc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A protlm model directory with a tiny random ProtT5 saved at steps 1 and 2 (different params)."""
    cfg = models.get_config("prot_t5_tiny")
    model = models.get_model(cfg)
    shapes = {k: jnp.zeros((1, 8), jnp.int32) for k in ("encoder_input_tokens", "decoder_input_tokens")}
    root = tmp_path_factory.mktemp("tiny") / "model"
    params = {}
    for step in (1, 2):
        params[step] = nn.unbox(model.init(jax.random.PRNGKey(step), shapes)["params"])
        checkpoints.save_params(root, params[step], cfg, step=step)
    return root, cfg, params


@pytest.fixture(scope="module")
def deeploc(data_root):
    return [(r.id, r.sequence) for r in datasets.load_deeploc(data_root)["test"]]


def _fasta(path, items):
    datasets.write_fasta(items, path)
    return path


def _cli(*args):
    return subproc.run(["protlm.embed", *map(str, args), "--no_progress"], timeout=300)


# ------------------------------------------------------------------------- item 2: two writers
HOLD_FORWARD = """
import pathlib, sys, time
from protlm import embed
real = embed.make_forward
def held(*a, **k):
    fwd = real(*a, **k)
    def forward(*b):
        started = pathlib.Path(sys.argv[1])
        if not started.exists():
            started.touch()
            while not pathlib.Path(sys.argv[2]).exists():   # the test lets it go on
                time.sleep(0.1)
        return fwd(*b)
    return forward
embed.make_forward = held
sys.exit(embed.main(sys.argv[3:]))
"""


def test_two_processes_on_one_output_second_is_refused_first_completes(tmp_path, tiny, deeploc):
    model_dir, _, _ = tiny
    items = deeploc[:60]
    fasta = _fasta(tmp_path / "p.fasta", items)
    out = tmp_path / "out.h5"
    started, go = tmp_path / "started", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_FORWARD, started, go, "--model", model_dir, "--fasta", fasta, "--output", out,
         "--per_protein", "--no_progress"], cwd=subproc.REPO, env=subproc.env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.time()
        while not started.exists():      # the first run holds the output, mid-way through its work
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.time() - t0 < 300
            time.sleep(0.2)
        second = _cli("--model", model_dir, "--fasta", fasta, "--output", out, "--per_protein")
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"another process (pid {first.pid} on {os.uname().nodename}" in second.stderr
        assert str(out) in second.stderr
        assert "Traceback" not in second.stderr
        go.touch()
        output = first.communicate(timeout=300)[0]
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, output[-3000:]
    with h5py.File(out, "r") as f:
        assert set(f) == {embed.sanitize_id(pid) for pid, _ in items}
    assert not out.with_name("out.h5.partial").exists() and not out.with_name("out.h5.lock").exists()


def test_a_killed_writer_does_not_block_the_resume(tmp_path, tiny, deeploc):
    model_dir, _, _ = tiny
    fasta = _fasta(tmp_path / "p.fasta", deeploc[:30])
    out = tmp_path / "out.h5"
    started, go = tmp_path / "started", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_FORWARD, started, go, "--model", model_dir, "--fasta", fasta, "--output", out,
         "--no_progress"], cwd=subproc.REPO, env=subproc.env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not started.exists():
        assert first.poll() is None and time.time() - t0 < 300
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = _cli("--model", model_dir, "--fasta", fasta, "--output", out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with h5py.File(out, "r") as f:
        assert len(f) == 30


# ------------------------------------------------------------------------- item 5: provenance
def test_an_output_made_from_another_fasta_is_refused_with_the_way_out(tmp_path, tiny, deeploc):
    model_dir, _, _ = tiny
    loaded = embed.load_model(model_dir)
    out = tmp_path / "e.h5"
    first = _fasta(tmp_path / "first.fasta", deeploc[:6])
    embed.embed_fasta(model_dir, first, out, progress=False, loaded=loaded)
    with h5py.File(out, "r") as f:
        assert f.attrs["fasta"] == str(first.resolve())
        assert len(f.attrs["fasta_ids_sha256"]) == 64
    other = _fasta(tmp_path / "other.fasta", deeploc[:4] + deeploc[10:12])
    with pytest.raises(embed.EmbedInputError) as err:
        embed.embed_fasta(model_dir, other, out, progress=False, loaded=loaded)
    msg = str(err.value)
    assert str(out) in msg and str(first.resolve()) in msg and str(other) in msg
    assert "--output" in msg and "delete" in msg
    with h5py.File(out, "r") as f:
        assert len(f) == 6                       # nothing merged
    # The same proteins from another path (a copy, a temporary file) are the same input.
    copy = _fasta(tmp_path / "copy.fasta", deeploc[:6])
    again = embed.embed_fasta(model_dir, copy, out, progress=False, loaded=loaded)
    assert again["proteins"] == 0 and again["skipped"] == 6


# ------------------------------------------------------------------------- item 14: not an h5
def test_an_existing_file_that_is_not_hdf5_is_named(tmp_path, tiny, deeploc):
    model_dir, _, _ = tiny
    fasta = _fasta(tmp_path / "p.fasta", deeploc[:3])
    out = tmp_path / "notes.h5"
    out.write_text("my notes, not embeddings\n")
    result = _cli("--model", model_dir, "--fasta", fasta, "--output", out)
    assert result.returncode == 2
    assert f"{out}: exists and is not an HDF5 file" in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_text() == "my notes, not embeddings\n"


# ------------------------------------------------------------------------- command line output
def test_cli_prints_what_it_does_and_a_rerun_skips_all(tmp_path, tiny, deeploc):
    model_dir, _, _ = tiny
    fasta = _fasta(tmp_path / "p.fasta", deeploc[:5])
    out = tmp_path / "e.h5"
    first = _cli("--model", model_dir, "--fasta", fasta, "--output", out, "--per_protein")
    assert first.returncode == 0, first.stderr[-3000:]
    text = first.stdout + first.stderr
    assert "5 proteins, 0 already embedded, 5 to do" in text
    assert "embedded 5 proteins" in text and str(out) in text
    second = _cli("--model", model_dir, "--fasta", fasta, "--output", out, "--per_protein")
    assert second.returncode == 0
    assert f"all 5 proteins of {fasta} are already in {out}; nothing to do" in second.stdout + second.stderr


def test_step_chooses_the_checkpoint(tmp_path, tiny, deeploc):
    model_dir, cfg, params = tiny
    fasta = _fasta(tmp_path / "p.fasta", deeploc[:2])
    for step in (1, 2):
        assert _cli("--model", model_dir, "--fasta", fasta, "--output", tmp_path / f"s{step}.h5",
                    "--per_protein", "--step", step).returncode == 0
    ref = embed.embed_fasta("x", fasta, tmp_path / "ref1.h5", per_residue=False, per_protein=True, progress=False,
                            loaded=embed.prepare_model(params[1], cfg))
    assert ref["proteins"] == 2
    with h5py.File(tmp_path / "s1.h5") as a, h5py.File(tmp_path / "ref1.h5") as b, \
            h5py.File(tmp_path / "s2.h5") as c:
        for k in a:
            np.testing.assert_allclose(a[k][()], b[k][()], atol=1e-6)
            assert not np.allclose(a[k][()], c[k][()])
        assert a.attrs["step"] == 1 and c.attrs["step"] == 2
    missing = _cli("--model", model_dir, "--fasta", fasta, "--output", tmp_path / "s9.h5", "--step", 9)
    assert missing.returncode == 2 and "no checkpoint at step 9; available: [1, 2]" in missing.stderr


def test_prottrans_keys_and_the_original_header(tmp_path, tiny, deeploc):
    model_dir, _, _ = tiny
    loaded = embed.load_model(model_dir)
    items = [("sp|P1.2/a desc with v1.0 and a/b", deeploc[0][1]), ("Q9 other", deeploc[1][1])]
    fasta = tmp_path / "h.fasta"
    fasta.write_text("".join(f">{h}\n{s}\n" for h, s in items))
    embed.embed_fasta(model_dir, fasta, tmp_path / "pt.h5", progress=False, loaded=loaded, key_style="prottrans")
    embed.embed_fasta(model_dir, fasta, tmp_path / "id.h5", progress=False, loaded=loaded)
    with h5py.File(tmp_path / "pt.h5") as pt, h5py.File(tmp_path / "id.h5") as ids:
        assert set(pt) == {"sp|P1_2_a desc with v1_0 and a_b", "Q9 other"}
        assert set(ids) == {"sp|P1_2_a", "Q9"}
        assert pt["Q9 other"].attrs["header"] == "Q9 other" and ids["Q9"].attrs["header"] == "Q9 other"
        assert pt.attrs["key_style"] == "prottrans"
        np.testing.assert_array_equal(pt["Q9 other"][()], ids["Q9"][()])
    with pytest.raises(embed.EmbedInputError, match="key_style='id', this run has key_style='prottrans'"):
        embed.embed_fasta(model_dir, fasta, tmp_path / "id.h5", progress=False, loaded=loaded,
                          key_style="prottrans")
