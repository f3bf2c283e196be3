"""The `mapped` format: any CSV or Parquet export, described by a YAML mapping to the canonical schema.

A mapping names the source column of each canonical field, translates event-type codes, and says how to read
timestamps (ISO 8601, a strptime format, or epoch seconds/milliseconds) and in which zone naive ones are.
Example (docs/raw_schema.md has the full reference)::

    file: {header: true, delimiter: ";", encoding: latin-1}
    columns: {user_id: Kunde, event_ts: Zeit, event_type: Aktion, item_id: Artikel, price: Preis}
    event_types: {ansicht: view, warenkorb: cart, kauf: purchase}
    timestamp: {format: "%d.%m.%Y %H:%M", timezone: Europe/Berlin}

The mapping is checked before any row is read: unknown keys, a non-canonical target type, an unknown zone or a
source column the file does not have fail the load with a message naming the mapping and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from dagster_project.ingest.readers import SUFFIXES, IngestError, file_columns, reader_sql
from dagster_project.ingest.reviews import REQUIRED as REVIEW_REQUIRED
from dagster_project.ingest.reviews import STAGED as REVIEW_FIELDS
from dagster_project.ingest.reviews import staged_reviews_sql
from dagster_project.warehouse import CANONICAL_EVENT_TYPES

CANONICAL_FIELDS = ("user_id", "event_ts", "event_type", "event_id", "item_id", "category_id", "price", "quantity",
                    "session_id", "item_description")
EPOCH_UNITS = {"epoch_seconds": 1, "epoch_milliseconds": 1000}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileOptions(_Strict):
    type: Literal["csv", "parquet"] | None = None   # default: from the file's suffix
    header: bool = True
    column_names: list[str] | None = None           # a headerless CSV's columns, in order
    delimiter: str | None = None                    # default: detected
    encoding: Literal["utf-8", "utf-16", "latin-1"] = "utf-8"

    @model_validator(mode="after")
    def _headerless_needs_names(self):
        if not self.header and not self.column_names:
            raise ValueError("file.header is false: list the columns in file.column_names")
        return self


class TimestampOptions(_Strict):
    format: str = "iso8601"     # iso8601 | epoch_seconds | epoch_milliseconds | a strptime format such as %d/%m/%Y %H:%M
    timezone: str = "UTC"       # the zone of naive timestamps; timestamps with an offset keep it

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("iso8601", *EPOCH_UNITS) and "%" not in value:
            raise ValueError(f"timestamp.format {value!r} is not iso8601, epoch_seconds, epoch_milliseconds "
                             "or a strptime format (with % codes)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timestamp.timezone {value!r} is not an IANA time zone") from exc
        return value


class Mapping(_Strict):
    table: Literal["events", "reviews"] = "events"  # what the file holds: raw.events or raw.reviews rows
    file: FileOptions = FileOptions()
    columns: dict[str, str]                         # canonical field -> source column
    constants: dict[str, str] = {}                  # canonical field -> a value for every row (event_type: purchase)
    event_types: dict[str, str] = {}                # source code (case-insensitive) -> canonical event type
    timestamp: TimestampOptions = TimestampOptions()

    @model_validator(mode="after")
    def _complete(self):
        fields, required = ((CANONICAL_FIELDS, ("user_id", "event_ts", "event_type")) if self.table == "events"
                            else (REVIEW_FIELDS, REVIEW_REQUIRED))
        for section in (self.columns, self.constants):
            unknown = sorted(set(section) - set(fields))
            if unknown:
                kind = "canonical" if self.table == "events" else "review"
                raise ValueError(f"unknown {kind} field(s) {', '.join(unknown)}; "
                                 f"expected some of {', '.join(fields)}")
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise ValueError(f"{', '.join(both)} given both as a column and as a constant")
        missing = [f for f in required if f not in self.columns and f not in self.constants]
        if missing:
            raise ValueError(f"no source for required field(s) {', '.join(missing)} (in columns or constants)")
        if self.table == "reviews":
            if self.event_types:
                raise ValueError("event_types apply to a mapping of events, not of reviews")
            return self
        targets = set(self.event_types.values()) | ({self.constants["event_type"]} if "event_type" in self.constants else set())
        bad = sorted(targets - set(CANONICAL_EVENT_TYPES))
        if bad:
            raise ValueError(f"event type(s) {', '.join(bad)} are not canonical; "
                             f"expected some of {', '.join(CANONICAL_EVENT_TYPES)}")
        return self


def load_mapping(path: Path) -> Mapping:
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: mapping file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Mapping.model_validate(raw if raw is not None else {})
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}: not a readable YAML mapping: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'mapping'}: {e['msg']}" for e in exc.errors())
        raise IngestError(f"{path}: invalid mapping: {problems}") from exc


def find_mapping(data_file: Path) -> Path:
    """The mapping of a landed file: ``<name>.yaml`` beside it, else ``mapping.yaml`` in its folder."""
    for candidate in (data_file.with_suffix(".yaml"), data_file.with_suffix(".yml"),
                      data_file.parent / "mapping.yaml", data_file.parent / "mapping.yml"):
        if candidate.is_file():
            return candidate
    raise IngestError(f"{data_file}: no mapping: pass --mapping FILE, or put {data_file.stem}.yaml or "
                             "mapping.yaml beside the file")


def _literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _column(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _timestamp_sql(column: str, options: TimestampOptions) -> str:
    """SQL turning the source column into a naive UTC timestamp (NULL where it does not parse)."""
    text = f"trim(cast({column} as varchar))"
    zone = _literal(options.timezone)
    if options.format in EPOCH_UNITS:
        return f"cast(to_timestamp(try_cast({text} as double) / {EPOCH_UNITS[options.format]}) as timestamp)"
    if options.format == "iso8601":
        aware = rf"regexp_matches({text}, '(Z|[+-]\d\d(:?\d\d)?)$')"
        return (f"case when {aware} then cast(try_cast({text} as timestamptz) as timestamp) "
                f"else cast(timezone({zone}, try_cast({text} as timestamp)) as timestamp) end")
    parsed = f"try_strptime({text}, {_literal(options.format)})"
    if "%z" in options.format or "%Z" in options.format:
        return f"cast({parsed} as timestamp)"
    return f"cast(timezone({zone}, {parsed}) as timestamp)"


def mapped_table(path: Path, mapping: Path | None = None) -> str:
    """What a mapped file holds (its mapping's ``table``): events or reviews."""
    return load_mapping(Path(mapping) if mapping else find_mapping(path)).table


def mapped_select(con: duckdb.DuckDBPyConnection, path: Path, mapping: Path | None = None) -> tuple[str, str]:
    mapping_path = Path(mapping) if mapping else find_mapping(path)
    spec = load_mapping(mapping_path)
    options = spec.file
    if options.type and SUFFIXES.get(path.suffix.lower()) != options.type:
        raise IngestError(f"{path}: the mapping {mapping_path.name} says file.type {options.type}, "
                                 f"but the file is {path.suffix or 'without a suffix'}")
    reader = reader_sql(path, csv_columns=None if options.header else options.column_names,
                            delimiter=options.delimiter, encoding=options.encoding)
    found = file_columns(con, path, reader)
    absent = sorted(c for c in spec.columns.values() if c not in found)
    if absent:
        raise IngestError(f"{path}: the mapping {mapping_path.name} names column(s) the file does not have: "
                                 f"{', '.join(absent)}; the file has {', '.join(found)}")

    def source(field: str) -> str:
        if field in spec.columns:
            return f"cast({_column(spec.columns[field])} as varchar)"
        if field in spec.constants:
            return _literal(spec.constants[field])
        return "cast(null as varchar)"

    def timestamp(field: str) -> tuple[str, str]:
        """(the parsed timestamp, the reason where the source has a value that does not parse)."""
        column = _column(spec.columns[field]) if field in spec.columns else _literal(spec.constants[field])
        parsed = _timestamp_sql(column, spec.timestamp)
        return parsed, f"case when {column} is not null and ({parsed}) is null then 'bad_timestamp' end"

    if spec.table == "reviews":  # the staged columns of ingest/reviews.py
        review_ts, bad = timestamp("review_ts")
        fields = {f: source(f) for f in REVIEW_FIELDS} | {"review_ts": review_ts}
        return reader, staged_reviews_sql(fields, bad)
    codes = " ".join(f"when {_literal(k.strip().lower())} then {_literal(v)}" for k, v in spec.event_types.items())
    event_type = (f"case lower(trim({source('event_type')})) {codes} else lower(trim({source('event_type')})) end"
                  if codes else f"lower(trim({source('event_type')}))")
    event_ts, bad = timestamp("event_ts")
    return reader, f"""
        select
            _row_number,
            {source('event_id')} as event_id,
            {source('user_id')} as user_id,
            {event_ts} as event_ts_raw,
            {event_type} as event_type,
            {source('item_id')} as item_id,
            {source('category_id')} as category_id,
            {source('price')} as price_raw,
            {source('quantity')} as quantity_raw,
            {source('session_id')} as session_id,
            {source('item_description')} as item_description,
            {bad} as _format_reason
        from _source
    """
