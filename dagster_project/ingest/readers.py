"""Reading an export file: the DuckDB table function over it (every CSV column as text, so that bad values are
quarantined row by row), its columns, its checksum, and the errors that stop a whole file. Used by every format
(formats.py, mapped.py) and by the loader; it imports none of them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb

SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}


class IngestError(ValueError):
    """A file that cannot be loaded at all; nothing of it was written."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def reader_sql(path: Path, csv_columns: list[str] | None = None, *, delimiter: str | None = None,
            encoding: str = "utf-8") -> str:
    """A DuckDB table function over the file; every CSV column read as text so that bad values are
    quarantined row by row instead of failing the whole file. ``csv_columns`` names a headerless CSV's columns."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise IngestError(f"{path}: unsupported file type {path.suffix!r} (expected .parquet or .csv)")
    if kind == "parquet":
        return f"read_parquet({sql_literal(str(path))})"
    _refuse_truncated_csv(path, csv_columns, delimiter)
    options = ["all_varchar = true", "null_padding = true", f"encoding = {sql_literal(encoding)}"]
    if delimiter:
        options.append(f"delim = {sql_literal(delimiter)}")
    if csv_columns:
        names = ", ".join(sql_literal(c) for c in csv_columns)
        options += ["header = false", f"names = [{names}]"]
    else:
        options.append("header = true")
    return f"read_csv({sql_literal(str(path))}, {', '.join(options)})"


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _refuse_truncated_csv(path: Path, csv_columns: list[str] | None, delimiter: str | None) -> None:
    """A CSV whose last line has no newline and fewer fields than the first line was cut off in transfer
    (a short line that ends properly is a bad row, quarantined like any other)."""
    size = path.stat().st_size
    if size == 0:
        raise IngestError(f"{path}: the file is empty")
    with path.open("rb") as handle:
        first = handle.readline(1 << 16)
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read()
    if tail.endswith((b"\n", b"\r")):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    sep = (delimiter or _guess_delimiter(first)).encode()
    expected = len(csv_columns) if csv_columns else first.count(sep) + 1
    found = last.count(sep) + 1
    if found < expected and last != first:
        raise IngestError(f"{path}: the file looks truncated: its last line has {found} of {expected} fields and "
                          "no line end; re-export or re-send the whole file (nothing was loaded)")


def _guess_delimiter(line: bytes) -> str:
    return max((",", ";", "\t", "|"), key=lambda d: line.count(d.encode()))


def require_columns(con: duckdb.DuckDBPyConnection, path: Path, reader: str, required: tuple[str, ...]) -> list[str]:
    """The file's columns; an IngestError naming the file if a required one is missing."""
    columns = file_columns(con, path, reader)
    missing = [c for c in required if c not in columns]
    if missing:
        raise IngestError(f"{path}: missing required column(s) {', '.join(missing)}; found {', '.join(columns)}")
    return columns


def file_columns(con: duckdb.DuckDBPyConnection, path: Path, reader: str) -> list[str]:
    try:
        return [row[0] for row in con.execute(f"describe select * from {reader}").fetchall()]
    except duckdb.Error as exc:
        raise IngestError(f"{path}: cannot be read as {path.suffix.lstrip('.')}: {first_error_line(exc)}") from exc


def first_error_line(exc: duckdb.Error) -> str:
    """DuckDB's CSV errors run over many lines; the first ones say what and where, plus a plain hint."""
    text = str(exc)
    if "Invalid unicode" in text:
        return ("it is not UTF-8 encoded (" + text.splitlines()[0].strip() + "); re-export it as UTF-8, or load it "
                "with the mapped format and file.encoding: latin-1 or utf-16")
    return " ".join(line.strip() for line in text.splitlines()[:3] if line.strip())
