"""Read and write datasets: JSONL, JSON, CSV, Parquet, Hugging Face `datasets` (saved folders or Hub names)."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import DataError, MissingDependencyError, unknown
from llmlabel.io import FORMATS

log = logging.getLogger("llmlabel")


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
        if "\x00" in self.source:
            raise DataError(f"data path {self.source!r} contains a NUL character")
        try:
            exists = self.path.exists()
        except OSError as exc:  # a name too long, a component that is not a folder
            raise DataError(f"cannot read data {self.source[:200]}: {exc.strerror or exc}") from None
        if exists:
            self.path = _resolve_file(self.path, split)
        elif self.path.is_symlink():
            raise DataError(f"data file {self.source} is a symlink that leads nowhere (dangling, or a loop)")
        elif self.path.suffix in FORMATS or self.source.startswith((".", "/", "~")):
            raise DataError(f"data file not found: {self.source}")
        else:
            _check_hub_dataset(self.source)
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
        try:
            yield from self._file_rows()
        except OSError as exc:  # a folder, a device, no permission, an I/O error: one line, not a traceback
            raise DataError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def _file_rows(self) -> Iterator[dict[str, Any]]:
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
            yield from self._json_rows()
        elif suffix == ".csv":
            yield from self._csv_rows()
        elif suffix == ".parquet":
            yield from self._parquet_rows()
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

    def _json_rows(self) -> Iterator[dict[str, Any]]:
        try:
            data = json.loads(self._read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if isinstance(data, dict):
            data = data.get("data") or data.get("rows") or [data]
        if not isinstance(data, list):
            raise DataError(f"{self.path} must hold a JSON list of row objects (or {{\"data\": [...]}}); "
                            f"got a JSON {type(data).__name__}")
        for number, row in enumerate(data, 1):
            if not isinstance(row, dict):
                raise DataError(f"{self.path} row {number} is not a JSON object (got {json.dumps(row)[:40]}); "
                                "rows look like {\"text\": ..., \"label\": ...}")
            yield row

    def _csv_rows(self) -> Iterator[dict[str, Any]]:
        """CSV rows; a row with more or fewer fields than the header is an error naming its line (a ragged row is
        almost always an unquoted comma in a text, and guessing would shift every column after it)."""
        import io

        extra = object()  # restkey: the fields past the header's
        old_limit = csv.field_size_limit(2**31 - 1)  # texts may be long (1 MB); the default is 128 KiB a field
        try:
            reader = csv.DictReader(io.StringIO(self._read_text(), newline=""), restkey=extra)  # type: ignore[arg-type]
            width = None
            for row in reader:
                width = width or len(reader.fieldnames or [])
                got = width + len(row.pop(extra, [])) if extra in row else sum(v is not None for v in row.values())
                if got != width:
                    raise DataError(f"{self.path} line {reader.line_num} has {got} field(s) but the header has "
                                    f"{width}; quote fields that contain commas")
                yield row
        except csv.Error as exc:
            raise DataError(f"{self.path} is not valid CSV: {exc}") from None
        finally:
            csv.field_size_limit(old_limit)

    def _parquet_rows(self) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(self.path).iter_batches(batch_size=1024)
            for batch in batches:
                yield from batch.to_pylist()
        except (pa.ArrowException, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{self.path} is not a readable Parquet file: {first[:200]}") from None

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


def _check_hub_dataset(name: str) -> None:
    """A name that is no local path is a Hugging Face Hub dataset: without a network that is a one-line error at
    once (datasets would retry the Hub for half a minute). In offline mode (HF_DATASETS_OFFLINE=1) datasets reads its
    local cache, which answers at once, so it is left to try."""
    offline = any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
                  for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    if offline:
        return
    from llmlabel.models import hub_reachable

    if not hub_reachable():
        raise DataError(f"data '{name}' is not a file or folder here, and the Hugging Face Hub cannot be reached to "
                        "load it as a dataset name (offline); give a JSONL/CSV/JSON/Parquet file or a folder (or set "
                        "HF_DATASETS_OFFLINE=1 to read a dataset from the local datasets cache)")


def load_labels_file(path: Path) -> list[str]:
    """Ordered label names from a `labels.json` (a list of names)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); it must be a JSON list of "
                        'label names, e.g. ["negative", "positive"]') from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{path} must be a non-empty JSON list of label names")
    for number, name in enumerate(data, 1):
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            raise DataError(f"{path}: label {number} is not a non-empty name (got {json.dumps(name)[:40]})")
    return [str(x) for x in data]
