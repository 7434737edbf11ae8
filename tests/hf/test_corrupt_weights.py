"""A corrupt `.bin` or `.safetensors` (issue 15 item 13): one line naming the file and what is wrong;
torch's advice to load with `weights_only=False` (unsafe: it runs code from the file) never shows."""
from __future__ import annotations

import pickle

import pytest

from protlm import import_hf, models
from protlm.hf import export

from .conftest import init_params

import torch

pytestmark = pytest.mark.hf


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A transformers directory of a tiny ProtT5 (model.safetensors) and its tensors as a .bin."""
    config = models.get_config("prot_t5_tiny")
    out = export.export_params(init_params(config), config, tmp_path_factory.mktemp("hf") / "t5",
                               progress=False)
    from safetensors.numpy import load_file

    state = {k: torch.from_numpy(v) for k, v in load_file(out / "model.safetensors").items()}
    torch.save(state, out.parent / "pytorch_model.bin")
    return out


def _copy_with(src, dst, name, data: bytes):
    dst.mkdir()
    for p in src.iterdir():
        if p.name != "model.safetensors":
            (dst / p.name).write_bytes(p.read_bytes())
    (dst / name).write_bytes(data)
    return dst / name


def _import(capsys, src, out):
    code = import_hf.main(["--hf_dir", str(src), "--output_dir", str(out)])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle"])
def test_corrupt_bin_is_one_line_without_unsafe_advice(hf_dir, tmp_path, capsys, damage):
    good = (hf_dir.parent / "pytorch_model.bin").read_bytes()
    # "pickle": a legacy (non-zip) file naming a global that torch's safe loader refuses.
    data = {"truncated": good[: len(good) // 2], "garbage": b"\x00not a checkpoint" * 100,
            "pickle": pickle.dumps(print)}[damage]
    path = _copy_with(hf_dir, tmp_path / "src", "pytorch_model.bin", data)
    code, err = _import(capsys, tmp_path / "src", tmp_path / "out")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("import_hf: error: ")]
    assert len(lines) == 1 and str(path) in lines[0], err
    assert "weights_only" not in err and "arbitrary code" not in err
    assert "not a readable PyTorch checkpoint" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_is_one_line_naming_the_file(hf_dir, tmp_path, capsys, damage):
    good = (hf_dir / "model.safetensors").read_bytes()
    data = good[: len(good) // 2] if damage == "truncated" else b"\xff" * 64
    path = _copy_with(hf_dir, tmp_path / "src", "model.safetensors", data)
    code, err = _import(capsys, tmp_path / "src", tmp_path / "out")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("import_hf: error: ")]
    assert len(lines) == 1 and str(path) in lines[0] and "not a readable safetensors file" in lines[0], err
    assert "Traceback" not in err
