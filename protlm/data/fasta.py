"""Streaming FASTA reader with validation that names the file, line, record and the fix.

Reads one file, a glob, or a list of files/globs; plain or gzip (detected from the magic bytes);
local paths directly and any other scheme (gs://, s3://, ...) through `tf.io.gfile`, imported lazily
so that local use needs no TensorFlow.

Accepted: multi-line records, CRLF line ends, blank lines, lower case (upper-cased on read), one
trailing `*` per record (dropped), a UTF-8 byte-order mark. Everything else raises `FastaFormatError`.

Example:
  for rec in read_fasta("shards/train-*.fasta.gz"):
      print(rec.id, len(rec.sequence))
"""
from __future__ import annotations

import glob as globlib
import gzip
import os
import zlib
from typing import BinaryIO, Iterable, Iterator, NamedTuple, Sequence

from protlm.data.tokens import RESIDUE_ALPHABET

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


class FastaRecord(NamedTuple):
    """One FASTA record.

    Attributes:
      id: first whitespace-delimited word of the header (without '>').
      description: rest of the header line ('' when absent).
      sequence: upper-case residue letters, trailing '*' removed.
      path: file the record came from.
      line: 1-based line number of the record's header.
    """

    id: str
    description: str
    sequence: str
    path: str
    line: int


class FastaFormatError(ValueError):
    """A FASTA file is malformed. The message names file, line, record and how to fix it."""

    def __init__(self, path: str, line: int, problem: str, fix: str, record: str | None = None):
        self.path, self.line, self.problem, self.fix, self.record = path, line, problem, fix, record
        where = f"{path}:{line}" if line else path
        rec = f" (record {record!r})" if record else ""
        super().__init__(f"{where}: {problem}{rec}. Fix: {fix}")


def _is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def expand_paths(paths_or_glob: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expands a path, glob, comma-separated list or list of those into a sorted, de-duplicated file list.

    Raises:
      FileNotFoundError: a pattern matches no file.
    """
    if isinstance(paths_or_glob, (str, os.PathLike)):
        patterns = [p for p in str(paths_or_glob).split(",") if p.strip()]
    else:
        patterns = [str(p) for p in paths_or_glob]
    if not patterns:
        raise FileNotFoundError("no FASTA path given")
    files: list[str] = []
    for pattern in patterns:
        pattern = pattern.strip()
        if _is_remote(pattern):
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            matches = sorted(tf.io.gfile.glob(pattern))
        elif any(c in pattern for c in "*?["):
            matches = sorted(globlib.glob(_local(pattern)))
        else:
            matches = [_local(pattern)] if os.path.exists(_local(pattern)) else []
        if not matches:
            raise FileNotFoundError(f"FASTA pattern {pattern!r} matches no file (check the path or the glob)")
        files.extend(m for m in matches if m not in files)
    return files


def open_binary(path: str) -> BinaryIO:
    """Opens `path` for reading bytes, transparently gunzipping gzip data (by magic bytes)."""
    if _is_remote(path):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        raw: BinaryIO = tf.io.gfile.GFile(path, "rb")
    else:
        raw = open(_local(path), "rb")  # pylint: disable=consider-using-with
    # Peek without consuming (GFile has no peek): read 2 bytes then rewind.
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if path.endswith((".gz", ".gzip")):
        raw.close()
        raise FastaFormatError(path, 0, "named .gz but is not gzip data", "decompress/rename it or re-download it")
    return raw


_VALID = bytes(sorted({ord(c) for c in RESIDUE_ALPHABET} | {ord("*")}))
_DIGITS = set(b"0123456789")
_WHITESPACE = set(b" \t\v\f\r")


def _diagnose(path: str, line_no: int, record: str, line: bytes, alphabet: Iterable[str]) -> FastaFormatError:
    """The specific error for the first invalid byte of an (upper-cased) sequence line."""
    valid = {ord(c) for c in alphabet} | {ord("*")}
    pos = next(i for i, b in enumerate(line) if b not in valid)
    b = line[pos]
    col = pos + 1
    if b >= 0x80 or (b < 0x20 and b not in _WHITESPACE) or b == 0x7F:
        return FastaFormatError(
            path, line_no, f"binary or non-ASCII byte 0x{b:02x} at column {col} of a sequence line",
            "the file is not a text FASTA; check that it was copied/decompressed completely", record)
    if b in _DIGITS:
        return FastaFormatError(
            path, line_no, f"digit {chr(b)!r} at column {col} of a sequence line",
            "remove position numbers (GenBank/EMBL layout), e.g. `sed '/^>/!s/[0-9 ]//g'`", record)
    if b in (ord("-"), ord(".")):
        return FastaFormatError(
            path, line_no, f"alignment gap {chr(b)!r} at column {col}; aligned FASTA is not accepted",
            "remove gap characters (e.g. `seqkit seq -g`) to get the unaligned sequence", record)
    if b in _WHITESPACE:
        return FastaFormatError(
            path, line_no, f"whitespace or stray text at column {col} of a sequence line ({line[:40].decode('ascii', 'replace')!r})",
            "put free text on the '>' header line and keep sequence lines to residue letters only", record)
    if chr(b).isalpha():
        return FastaFormatError(
            path, line_no, f"letter {chr(b)!r} at column {col} is not one of the residue letters {''.join(sorted(alphabet))}",
            "map it before training (e.g. to X) or remove the record", record)
    return FastaFormatError(
        path, line_no, f"character {chr(b)!r} at column {col} is not an amino-acid letter",
        "sequence lines may hold only residue letters and one trailing '*'", record)


def _read_one(path: str, alphabet: frozenset[str], allow_empty_file: bool) -> Iterator[FastaRecord]:
    valid = _VALID if alphabet == RESIDUE_ALPHABET else bytes(sorted({ord(c) for c in alphabet} | {ord("*")}))
    header_id: str | None = None
    description = ""
    header_line = 0
    parts: list[bytes] = []
    stop_seen = False
    n_records = 0
    line_no = 0

    def finish() -> FastaRecord:
        seq = b"".join(parts)
        if not seq:
            raise FastaFormatError(
                path, header_line, "empty sequence: a header with no sequence lines",
                "remove the record or add its sequence", header_id)
        return FastaRecord(header_id, description, seq.decode("ascii"), path, header_line)  # type: ignore[arg-type]

    fh = open_binary(path)
    try:
        for raw in fh:
            line_no += 1
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            line = raw.strip()
            if not line:
                continue
            first = line[0]
            if first == 0x3E:  # '>'
                if header_id is not None:
                    n_records += 1
                    yield finish()
                try:
                    text = line[1:].decode("utf-8")
                except UnicodeDecodeError as e:
                    raise FastaFormatError(
                        path, line_no, f"header is not UTF-8 text (byte 0x{line[1 + e.start]:02x})",
                        "the file looks binary or in a legacy encoding; re-export it as UTF-8 text") from None
                if any(ord(c) < 0x20 and c != "\t" for c in text):
                    raise FastaFormatError(path, line_no, "control/binary characters in a header line",
                                           "the file is not a text FASTA; check the copy")
                fields = text.strip().split(None, 1)
                if not fields:
                    raise FastaFormatError(path, line_no, "header line '>' without a record id",
                                           "give every record an id right after '>' (e.g. '>P12345 description')")
                header_id = fields[0]
                description = fields[1] if len(fields) > 1 else ""
                header_line = line_no
                parts = []
                stop_seen = False
            elif first == 0x3B:  # ';'
                raise FastaFormatError(path, line_no, "';' comment line (old FASTA style) is not accepted",
                                       "delete comment lines or move the text onto the '>' header", header_id)
            else:
                if header_id is None:
                    raise FastaFormatError(
                        path, line_no, "sequence data before the first '>' header (missing header)",
                        "start the file with a '>id' line; is this a raw sequence or a different format?")
                seq = line.upper()
                if seq.translate(None, valid):
                    raise _diagnose(path, line_no, header_id, seq, alphabet)
                if stop_seen:
                    raise FastaFormatError(
                        path, line_no, "sequence continues after a '*' stop",
                        "only one trailing '*' is accepted; split the record or remove the '*'", header_id)
                star = seq.find(b"*")
                if star >= 0:
                    if star != len(seq) - 1:
                        raise FastaFormatError(
                            path, line_no, f"'*' (stop) at column {star + 1} inside the sequence",
                            "only one trailing '*' is accepted; split the record or remove the '*'", header_id)
                    seq = seq[:-1]
                    stop_seen = True
                parts.append(seq)
        if header_id is not None:
            n_records += 1
            yield finish()
    except EOFError:
        raise FastaFormatError(
            path, line_no, "truncated gzip file (ended before the end-of-stream marker)",
            "the file was cut short; copy or download it again", header_id) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise FastaFormatError(path, line_no, f"corrupt gzip data ({e})",
                               "the file is damaged; copy or download it again", header_id) from None
    finally:
        fh.close()
    if n_records == 0 and not allow_empty_file:
        raise FastaFormatError(path, 0, "file contains no FASTA records",
                               "point the pattern at FASTA files or remove the empty file")


def read_fasta(
    paths_or_glob: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    alphabet: Iterable[str] = RESIDUE_ALPHABET,
    allow_empty_file: bool = False,
) -> Iterator[FastaRecord]:
    """Streams the records of every file matched by `paths_or_glob`, in file order.

    Args:
      paths_or_glob: a path, a glob, a comma-separated list, or a list of those. Local or gs://.
      alphabet: accepted upper-case residue letters (default: the 25 letters of both vocabularies;
        rare residues U Z O B are kept here and mapped by the tokenizer's policy).
      allow_empty_file: accept files without records instead of raising.

    Yields:
      FastaRecord(id, description, sequence, path, line).

    Raises:
      FileNotFoundError: a pattern matches nothing.
      FastaFormatError: malformed content (message names file, line, record and the fix).
    """
    alphabet = frozenset(a.upper() for a in alphabet)
    for path in expand_paths(paths_or_glob):
        yield from _read_one(path, alphabet, allow_empty_file)
