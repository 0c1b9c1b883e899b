"""Read and write row files (JSONL, JSON lists, CSV, TSV, Parquet) with precise errors.

Readers yield ``(line, row)`` pairs where ``line`` is the 1-based line of a JSONL/CSV
file (the row number for Parquet and JSON lists), so that every later error can name
where a bad row came from. Writers are atomic. The format is chosen by extension.

    rows = list(read_rows("answers.jsonl"))
    write_rows("scored.parquet", [row for _, row in rows])
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from simplesafe.atomic import atomic_open, atomic_path
from simplesafe.errors import DataError

OnError = Literal["raise", "skip"]
MAX_LINE_BYTES = 1_000_000
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")

csv.field_size_limit(sys.maxsize)


def file_format(path: str | Path) -> str:
    name = str(path).lower()
    for suffix in (".jsonl.gz", ".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"):
        if name.endswith(suffix):
            return {".ndjson": "jsonl", ".jsonl.gz": "jsonl.gz"}.get(suffix, suffix[1:])
    raise DataError(path, None, None, f"unknown file type; use one of {', '.join(SUFFIXES)}")


class RowError(DataError):
    """A bad row; carries the row position so ``on_error: skip`` can record a reject."""


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    with (gzip_open(path) if str(path).endswith(".gz") else open(path, "rb")) as fh:
        for line_no, raw in enumerate(fh, start=1):
            if len(raw) > MAX_LINE_BYTES:
                yield line_no, RowError(path, line_no, None, f"line is {len(raw):,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield line_no, RowError(path, line_no, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, RowError(path, line_no, None, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield line_no, RowError(path, line_no, None, f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield line_no, obj


def gzip_open(path: Path):
    import gzip

    return gzip.open(path, "rb")


def _read_json(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(data, dict):
        # {"data": [...]} or a single object
        data = data.get("data", data.get("rows", [data]))
    if not isinstance(data, list):
        raise DataError(path, None, None, "expected a JSON list of objects")
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            yield i, RowError(path, i, None, f"item {i} is {type(obj).__name__}, expected an object")
        else:
            yield i, obj


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, Any]]:
    try:
        fh = open(path, "r", encoding="utf-8", errors="strict", newline="")
        with fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                return
            header = [h.strip() for h in header]
            if header and header[0] == "":
                header[0] = "_index"  # pandas-style unnamed index column
            if len(set(header)) != len(header):
                dupes = sorted({h for h in header if header.count(h) > 1})
                raise DataError(path, 1, dupes[0], "duplicate column name in header")
            line_no = reader.line_num
            for record in reader:
                start_line = line_no + 1
                line_no = reader.line_num
                if not record or all(not c.strip() for c in record):
                    continue
                if len(record) != len(header):
                    yield start_line, RowError(path, start_line, None, f"has {len(record)} fields, the header has {len(header)}")
                    continue
                yield start_line, dict(zip(header, record))
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(path, None, None, f"malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}") from None


def _read_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(path, None, None, f"cannot read Parquet: {exc}") from None
    for i, row in enumerate(table.to_pylist(), start=1):
        yield i, row


HUB_PREFIX = "hub:"


def is_hub_path(path) -> bool:
    return isinstance(path, (str, Path)) and str(path).startswith(HUB_PREFIX)


def parse_hub_path(path: str) -> dict:
    """``hub:NAME?split=train&config=CFG&data_dir=DIR`` -> ``datasets.load_dataset`` arguments."""
    from urllib.parse import parse_qs, urlsplit

    rest = path[len(HUB_PREFIX):]
    parts = urlsplit("x://h/" + rest)
    name = parts.path.lstrip("/")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"split", "config", "data_dir", "revision"}
    if not name or unknown:
        raise DataError(path, None, None, "expected hub:NAME?split=SPLIT[&config=CFG][&data_dir=DIR][&revision=REV]"
                        + (f"; unknown parameter(s) {', '.join(sorted(unknown))}" if unknown else ""))
    return {"path": name, "name": query.get("config"), "data_dir": query.get("data_dir"),
            "split": query.get("split", "train"), "revision": query.get("revision")}


def _read_hub(path: str) -> Iterator[tuple[int, Any]]:
    """Rows of a Hugging Face Hub dataset (needs hub access or a populated HF cache)."""
    args = parse_hub_path(path)
    try:
        import datasets

        ds = datasets.load_dataset(**{k: v for k, v in args.items() if v is not None})
    except Exception as exc:  # hub errors come in many types; all mean "not available here"
        raise DataError(path, None, None,
                        f"could not load the hub dataset ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                        "offline, export it where the hub is reachable, e.g. "
                        f"load_dataset('{args['path']}', split='{args['split']}').to_json('file.jsonl'), "
                        "and point the recipe at that file") from None
    for i, row in enumerate(ds, start=1):
        yield i, row


def read_rows(
    path: str | Path,
    on_error: OnError = "raise",
    rejects: list | None = None,
) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, row)`` for every row of ``path``.

    ``path`` may also name a Hugging Face Hub dataset: ``hub:NAME?split=train`` (with
    optional ``config``, ``data_dir``, ``revision``), read with ``datasets.load_dataset``.
    A malformed row raises :class:`DataError` naming file and line; with
    ``on_error="skip"`` it is appended to ``rejects`` as ``{"file", "line", "reason"}``
    instead, never dropped silently.
    """
    if is_hub_path(path):
        yield from _read_hub(str(path))
        return
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    fmt = file_format(path)
    if fmt in ("jsonl", "jsonl.gz"):
        it = _read_jsonl(path)
    elif fmt == "json":
        it = _read_json(path)
    elif fmt == "csv":
        it = _read_delimited(path, ",")
    elif fmt == "tsv":
        it = _read_delimited(path, "\t")
    else:
        it = _read_parquet(path)
    for line, row in it:
        if isinstance(row, RowError):
            if on_error == "skip":
                if rejects is not None:
                    rejects.append({"file": str(path), "line": line, "reason": row.problem})
                continue
            raise row
        yield line, row


def require(row: dict, field: str, path, line: int, kind: type | tuple = str, allow_empty: bool = False):
    """Return ``row[field]`` or raise a :class:`DataError` naming file, line and field."""
    if field not in row or row[field] is None:
        raise DataError(path, line, field, "missing required field")
    value = row[field]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(path, line, field, f"expected {names}, got {type(value).__name__}")
    if not allow_empty and isinstance(value, str) and not value.strip():
        raise DataError(path, line, field, "is empty")
    return value


def check_unique_ids(rows: Iterable[tuple[int, dict]], path, field: str = "id") -> None:
    seen: dict[Any, int] = {}
    for line, row in rows:
        key = row.get(field)
        if key is None:
            continue
        if key in seen:
            raise DataError(path, line, field, f"duplicate id {key!r} (first seen on line {seen[key]})")
        seen[key] = line


def _jsonable(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def write_rows(path: str | Path, rows: Iterable[dict], columns: list[str] | None = None) -> int:
    """Write rows atomically; the format follows the extension. Returns the row count."""
    path = Path(path)
    fmt = file_format(path)
    rows = list(rows)
    if fmt == "jsonl":
        with atomic_open(path) as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable))
                fh.write("\n")
    elif fmt == "json":
        with atomic_open(path) as fh:
            json.dump(rows, fh, ensure_ascii=False, indent=1, default=_jsonable)
    elif fmt in ("csv", "tsv"):
        if columns is None:
            columns = []
            for row in rows:
                for key in row:
                    if key not in columns:
                        columns.append(key)
        with atomic_open(path) as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, delimiter="," if fmt == "csv" else "\t", extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (json.dumps(v, default=_jsonable) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    else:
        raise DataError(path, None, None, f"cannot write format {fmt}")
    return len(rows)


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one row and flush: for resumable logs where each line is a finished unit.

    A crash can leave at most a partial last line; :func:`read_jsonl_tolerant` skips it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False, default=_jsonable) + "\n")
        fh.flush()


def read_jsonl_tolerant(path: str | Path) -> list[dict]:
    """Read an append-only progress log, ignoring a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if not raw.endswith("\n"):
                break
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                break
    return out


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """One-record-per-line text files (e.g. D-Wikipedia articles) with UTF-8 errors named."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(path, line_no, None, f"line is {len(raw):,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
            try:
                yield line_no, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(path, line_no, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
