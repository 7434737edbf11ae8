"""FASTA reader: accepted variants and at least 12 malformed cases, each with its specific error."""
import gzip

import pytest

from protlm.data.fasta import FastaFormatError, FastaRecord, expand_paths, read_fasta


def _write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_accepted_variants(tmp_path):
    text = (b"\xef\xbb\xbf>sp|P1|A first protein\r\nMKT\r\nayv*\r\n\r\n"
            b">P2\nLLG\n\nVV\n>P3 x\tdesc\nWC\n")
    p = _write(tmp_path / "a.fasta", text)
    recs = list(read_fasta(str(p)))
    assert recs == [
        FastaRecord("sp|P1|A", "first protein", "MKTAYV", str(p), 1),
        FastaRecord("P2", "", "LLGVV", str(p), 5),
        FastaRecord("P3", "x\tdesc", "WC", str(p), 9),
    ]


def test_gzip_glob_and_lists(tmp_path):
    _write(tmp_path / "s1.fasta.gz", b">a\nMK\n", gz=True)
    _write(tmp_path / "s2.fa", b">b\nLL\n")
    _write(tmp_path / "s3.fasta", b">c\nGG\n")
    assert [r.id for r in read_fasta(str(tmp_path / "s*.fa*"))] == ["a", "b", "c"]
    assert [r.id for r in read_fasta([tmp_path / "s3.fasta", tmp_path / "s1.fasta.gz"])] == ["c", "a"]
    assert [r.id for r in read_fasta(f"{tmp_path}/s2.fa,{tmp_path}/s3.fasta")] == ["b", "c"]
    # gzip detected by magic bytes even without .gz
    _write(tmp_path / "nogz.fasta", b">d\nMM\n", gz=True)
    assert next(read_fasta(str(tmp_path / "nogz.fasta"))).sequence == "MM"


def test_missing_file_and_empty_glob(tmp_path):
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list(read_fasta(str(tmp_path / "nothing*.fasta")))
    with pytest.raises(FileNotFoundError):
        expand_paths(str(tmp_path / "missing.fasta"))


def test_real_corpus_first_records(pretraining_fasta):
    recs = []
    for rec in read_fasta(pretraining_fasta[0]):
        recs.append(rec)
        if len(recs) == 200:
            break
    assert recs[0].id == "UP000000625_83333_Ecoli_K12|sp|A5A612|YMGJ_ECOLI"
    assert all(r.sequence.isalpha() and r.sequence.isupper() for r in recs)


# (file content, gzip?, expected error fragment, expected line)
MALFORMED = {
    "sequence_before_header": (b"MKTAYIAK\n>p1\nMK\n", False, "before the first '>' header", 1),
    "header_without_id": (b">p1\nMK\n>   \nLL\n", False, "without a record id", 3),
    "empty_sequence_middle": (b">p1\n>p2\nMK\n", False, "empty sequence", 1),
    "empty_sequence_at_end": (b">p1\nMK\n>p2\n\n", False, "empty sequence", 3),
    "digits": (b">p1\nMKT\n  1 MKTAY\n", False, "digit '1'", 3),
    "gap_dash": (b">p1\nMK--TAY\n", False, "alignment gap '-'", 2),
    "gap_dot": (b">p1\nMK..TAY\n", False, "alignment gap '.'", 2),
    "stray_text": (b">p1\nMKTAY\nthis is not a sequence\n", False, "whitespace or stray text", 3),
    "stop_inside": (b">p1\nMK*TAY\n", False, "'*' (stop) at column 3", 2),
    "after_stop": (b">p1\nMKT*\nAAA\n", False, "continues after a '*'", 3),
    "unknown_letter": (b">p1\nMKJTAY\n", False, "letter 'J'", 2),
    "punctuation": (b">p1\nMK!TAY\n", False, "character '!'", 2),
    "binary_junk": (b">p1\nMK\x00\x01\xff\xfeTAY\n", False, "binary or non-ASCII byte 0x00", 2),
    "binary_header": (b">p1\xff\xfe\nMK\n", False, "header is not UTF-8", 1),
    "control_in_header": (b">p1\x00x\nMK\n", False, "control/binary characters in a header", 1),
    "comment_line": (b">p1\n;old comment\nMK\n", False, "';' comment line", 2),
    "empty_file": (b"", False, "no FASTA records", 0),
    "blank_only_file": (b"\n\n  \n", False, "no FASTA records", 0),
    "not_gzip": (b">p1\nMK\n", "fake", "named .gz but is not gzip", 0),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed(tmp_path, case):
    data, gz, fragment, line = MALFORMED[case]
    name = "bad.fasta.gz" if gz == "fake" else "bad.fasta"
    p = _write(tmp_path / name, data)
    with pytest.raises(FastaFormatError, match=None) as err:
        list(read_fasta(str(p)))
    msg = str(err.value)
    assert fragment in msg, msg
    assert err.value.line == line and err.value.path == str(p)
    assert str(p) in msg and "Fix:" in msg
    assert isinstance(err.value, ValueError)


def test_error_names_record(tmp_path):
    p = _write(tmp_path / "r.fasta", b">good\nMK\n>bad_one desc\nMK-L\n")
    with pytest.raises(FastaFormatError, match=r"r\.fasta:4: .*\(record 'bad_one'\)") as err:
        list(read_fasta(str(p)))
    assert err.value.record == "bad_one"


def test_truncated_gzip(tmp_path):
    body = b"".join(b">p%d\n%s\n" % (i, b"MKTAYIAKQRQISFVKSHFSRQ" * 20) for i in range(2000))
    data = gzip.compress(body)
    p = _write(tmp_path / "cut.fasta.gz", data[: len(data) // 2])
    seen = []
    with pytest.raises(FastaFormatError, match="truncated gzip") as err:
        for rec in read_fasta(str(p)):
            seen.append(rec.id)
    assert seen and err.value.line > 0  # streamed records before the cut, then a clear error


def test_corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(b">p1\n" + b"MKTAYIAKQR\n" * 500))
    data[len(data) // 2] ^= 0xFF  # flip bits in the deflate stream
    p = _write(tmp_path / "corrupt.fasta.gz", bytes(data))
    with pytest.raises(FastaFormatError, match="gzip"):
        list(read_fasta(str(p)))


def test_error_in_second_file_names_it(tmp_path):
    _write(tmp_path / "x1.fasta", b">a\nMK\n")
    bad = _write(tmp_path / "x2.fasta", b">b\nM K\n")
    with pytest.raises(FastaFormatError, match=str(bad)):
        list(read_fasta(str(tmp_path / "x*.fasta")))


def test_custom_alphabet_and_allow_empty(tmp_path):
    p = _write(tmp_path / "j.fasta", b">p\nMKJ\n")
    assert next(read_fasta(str(p), alphabet="MKJ")).sequence == "MKJ"
    e = _write(tmp_path / "e.fasta", b"")
    assert list(read_fasta(str(e), allow_empty_file=True)) == []
