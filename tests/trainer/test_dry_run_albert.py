"""gin/prot_albert.gin (and the 2048 phase): the full-size step lowers and compiles on an abstract
8-device mesh (FSDP), nothing allocated."""
import pytest

from tests.trainer import test_dry_run


@pytest.mark.slow
@pytest.mark.parametrize("gin_file,extra", [
    ("gin/prot_albert.gin", []),
    ("gin/prot_albert_2048.gin", ["--gin.INIT_CHECKPOINT='unused'"]),
])
def test_dry_run_compiles_full_size_albert_step(tmp_path, monkeypatch, gin_file, extra):
    monkeypatch.setitem(test_dry_run.CASES, "prot_albert", (gin_file, extra, 207_557_794))
    test_dry_run.test_dry_run_compiles_full_size_step(tmp_path, "prot_albert")
