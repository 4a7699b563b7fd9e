"""Read and write datasets: JSONL, JSON, CSV, Parquet, Hugging Face `datasets` (saved folders or Hub names)."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import DataError, MissingDependencyError, unknown

log = logging.getLogger("llmlabel")

FORMATS = (".jsonl", ".json", ".csv", ".parquet")


def _resolve_file(path: Path, split: str | None) -> Path:
    """A folder of split files (`<split>.jsonl` etc.) resolves to the split's file."""
    if not path.is_dir():
        return path
    if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        return path  # a `datasets.save_to_disk` folder
    split = split or "test"
    for ext in FORMATS:
        if (path / f"{split}{ext}").exists():
            return path / f"{split}{ext}"
    splits = sorted({p.stem for p in path.iterdir() if p.suffix in FORMATS})
    raise DataError(unknown(f"split in {path}", split, splits) if splits else f"no data files in folder {path}")


class Dataset:
    """A readable dataset: rows stream from disk (JSONL, CSV) or come from an in-memory table.

    Args:
        source: file path, folder of split files, `save_to_disk` folder, a shipped sample (`llmlabel:sst2`, see
            `llmlabel.samples`), or Hugging Face Hub name.
        split: split name for folders and Hub datasets (default 'test' for folders, 'train' on the Hub).
        limit: read at most this many rows.
    """

    def __init__(self, source: str | Path, split: str | None = None, limit: int | None = None):
        self.source = str(source)
        self.split = split
        self.limit = limit
        if self.source.startswith("llmlabel:"):  # a sample shipped with the package (llmlabel.samples)
            from llmlabel.samples import resolve

            self.path = resolve(self.source)
        else:
            self.path = Path(os.path.expanduser(self.source))
        self.invalid_utf8_rows = 0
        self._warned: set[int] = set()
        if self.path.exists():
            self.path = _resolve_file(self.path, split)
        elif self.path.suffix in FORMATS or self.source.startswith((".", "/", "~")):
            raise DataError(f"data file not found: {self.source}")
        self._columns: list[str] | None = None

    @property
    def labels_file(self) -> Path | None:
        """`labels.json` beside the data (ordered label names), if there is one."""
        for folder in (self.path if self.path.is_dir() else self.path.parent,):
            if (folder / "labels.json").exists():
                return folder / "labels.json"
        return None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.invalid_utf8_rows = 0  # counted per pass: the data may be read several times
        count = 0
        for row in self._rows():
            if self.limit is not None and count >= self.limit:
                return
            count += 1
            yield row

    def __len__(self) -> int:
        if not hasattr(self, "_len"):
            self._len = sum(1 for _ in self)
        return self._len

    def columns(self) -> list[str]:
        """Column names (from the first row)."""
        for row in self:
            return list(row)
        return []

    def _rows(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            yield from self._hub_rows()
            return
        if self.path.is_dir():
            yield from self._disk_rows()
            return
        suffix = self.path.suffix.lower()
        if suffix == ".jsonl":
            yield from self._jsonl_rows()
        elif suffix == ".json":
            data = json.loads(self._read_text())
            if isinstance(data, dict):
                data = data.get("data") or data.get("rows") or [data]
            yield from data
        elif suffix == ".csv":
            import io

            yield from csv.DictReader(io.StringIO(self._read_text(), newline=""))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        else:
            raise DataError(f"unsupported data file type '{suffix}' ({self.path}); use one of: {', '.join(FORMATS)}")

    def _read_text(self) -> str:
        raw = self.path.read_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid_utf8_rows += 1
            if 0 not in self._warned:
                self._warned.add(0)
                log.warning("%s is not valid UTF-8; undecodable bytes were replaced with U+FFFD", self.path)
        return raw.decode("utf-8", errors="replace")

    def _jsonl_rows(self) -> Iterator[dict[str, Any]]:
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.invalid_utf8_rows += 1
                    if number not in self._warned:
                        self._warned.add(number)
                        log.warning("%s line %d is not valid UTF-8; undecodable bytes replaced with U+FFFD",
                                    self.path, number)
                    line = raw.decode("utf-8", errors="replace")
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{self.path} line {number} is not valid JSON: {exc.msg}") from None
                if not isinstance(row, dict):
                    raise DataError(f"{self.path} line {number} is not a JSON object")
                yield row

    def _disk_rows(self) -> Iterator[dict[str, Any]]:
        from datasets import DatasetDict, load_from_disk

        data = load_from_disk(str(self.path))
        if isinstance(data, DatasetDict):
            split = self.split or ("test" if "test" in data else next(iter(data)))
            if split not in data:
                raise DataError(unknown(f"split of {self.path}", split, data.keys()))
            data = data[split]
        yield from self._hf_rows(data)

    def _hub_rows(self) -> Iterator[dict[str, Any]]:
        try:
            from datasets import load_dataset
        except ImportError:  # pragma: no cover - datasets is a dependency
            raise MissingDependencyError("datasets", "loading Hugging Face datasets") from None
        try:
            data = load_dataset(self.source, split=self.split or "train", streaming=True)
        except Exception as exc:  # noqa: BLE001 - datasets raises many types; report one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"cannot load dataset '{self.source}': {first[:200]}") from None
        yield from data

    @staticmethod
    def _hf_rows(data: Any) -> Iterator[dict[str, Any]]:
        # Map ClassLabel ints to names so gold labels compare with label names.
        features = getattr(data, "features", None) or {}
        names = {k: f.names for k, f in features.items() if hasattr(f, "names")}
        for row in data:
            for key, label_names in names.items():
                if isinstance(row.get(key), int) and 0 <= row[key] < len(label_names):
                    row[key] = label_names[row[key]]
            yield row


def load_labels_file(path: Path) -> list[str]:
    """Ordered label names from a `labels.json` (a list of names)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not data:
        raise DataError(f"{path} must be a non-empty JSON list of label names")
    return [str(x) for x in data]


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


#: lone UTF-16 surrogates (e.g. read from a JSON "\udc80" escape): valid in a Python str, not in a UTF-8 file
_SURROGATES = re.compile("[\ud800-\udfff]")


def _scrub(value: Any) -> Any:
    """`value` with lone surrogates in its strings replaced by U+FFFD (for CSV and Parquet, which cannot escape)."""
    if isinstance(value, str):
        return _SURROGATES.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def json_text(value: Any, **options: Any) -> str:
    """JSON text of `value`; non-ASCII is written as is, except that lone surrogates force \\u escapes (valid JSON
    that reads back to the same string; raw, they are not UTF-8)."""
    text = json.dumps(value, ensure_ascii=False, **options)
    if _SURROGATES.search(text):
        text = json.dumps(value, ensure_ascii=True, **options)
    return text


def atomic_write(path: str | Path, write: Any, text: bool = True) -> Path:
    """Create `path` atomically: `write(handle_or_tmp_path)` fills a temp file beside it, which is flushed to disk
    and renamed into place, so readers see the old file or the whole new one, never a part.

    `text=True` passes an open UTF-8 text handle; `text=False` passes the temp file's path (for writers that open
    it themselves). Temp files left by a killed writer (`.<name>.*.tmp`) are removed first.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run that was killed while writing
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if text:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            os.close(fd)
            write(tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_rows(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows to `path` (format from its extension), atomically: a temp file renamed into place (see
    `atomic_write`), so an interrupted run leaves the previous file whole and no partial one.

    JSONL and CSV are written as the rows arrive (a generator streams with flat memory); JSON and Parquet collect
    the rows first. Text holding lone surrogates (invalid Unicode) is written as \\u escapes in JSON/JSONL (read back
    unchanged) and as U+FFFD in CSV/Parquet.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"unsupported output type '{suffix or path.name}'; use one of: {', '.join(FORMATS)}")

    def write_text(handle: Any) -> None:
        if suffix == ".jsonl":
            for row in rows:
                handle.write(json_text(row) + "\n")
        elif suffix == ".json":
            handle.write(json_text(list(rows), indent=1))
        elif suffix == ".csv":
            writer = None
            for row in rows:
                if writer is None:  # columns from the first row; later extra keys are an error
                    writer = csv.DictWriter(handle, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow({k: _scrub(_jsonable(v)) for k, v in row.items()})

    def write_parquet(tmp: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(_scrub(list(rows))), tmp)

    if suffix == ".parquet":
        return atomic_write(path, write_parquet, text=False)
    return atomic_write(path, write_text)
