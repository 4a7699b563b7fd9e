"""Read and write datasets: JSONL, JSON, CSV, Parquet, Hugging Face `datasets` (saved folders or Hub names)."""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmlabel.errors import DataError, MissingDependencyError, OutputError, unknown

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


def _umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


#: temp files of an abandoned write older than this are removed even when their writer cannot be told (old names)
STALE_TEMP_SECONDS = 3600


def _remove_stale_temps(path: Path) -> None:
    """Remove temp files a killed writer left beside `path`; never another live writer's.

    Temp names carry their writer's pid (`.<name>.<pid>-<random>.tmp`): only those whose process is gone are removed,
    so two runs writing one file never delete each other's work in progress.
    """
    own = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-[^/]*\.tmp")
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = own.fullmatch(stale.name)
        try:
            if match:
                if int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
                    continue
            elif time.time() - stale.stat().st_mtime < STALE_TEMP_SECONDS:
                continue
            stale.unlink(missing_ok=True)
        except OSError:
            continue


class _WriteFailed(Exception):
    """An OSError of the output file itself (not of the code producing its content)."""


class _GuardedHandle:
    """A text handle whose write errors (ENOSPC, EIO, EFBIG) are told apart from errors of whatever produces the rows
    (e.g. reading the input), so only the former become "cannot write <file>"."""

    def __init__(self, handle: Any):
        self._handle = handle

    def write(self, text: str) -> int:
        try:
            return self._handle.write(text)
        except OSError as exc:
            raise _WriteFailed() from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _write_error(path: Path, exc: BaseException, existed: bool) -> OutputError:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    kept = f"the previous {path.name} is kept unchanged" if existed else f"no partial {path.name} was left"
    return OutputError(f"cannot write {path}: {reason}; {kept}")


def make_folder(folder: Path, what: str = "output folder") -> Path:
    """Create `folder` (and parents); a path that is a file or a device, no permission, or a full disk is a one-line
    OutputError naming it."""
    if "\x00" in str(folder):
        raise OutputError(f"{what} {str(folder)!r} contains a NUL character")
    try:
        if folder.is_symlink() and not folder.exists():
            raise OutputError(f"{what} {folder} is a symlink that leads nowhere (dangling, or a loop)")
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {folder} is not a folder (a file or a device is in the way)") from None
    except OSError as exc:
        raise OutputError(f"cannot create {what} {str(folder)[:200]}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise OutputError(f"{what} {folder} is not a folder (a file or a device is in the way)")
    return folder


def atomic_write(path: str | Path, write: Any, text: bool = True) -> Path:
    """Create `path` atomically: `write(handle_or_tmp_path)` fills a temp file beside it, which is flushed to disk
    and renamed into place, so readers see the old file or the whole new one, never a part.

    `text=True` passes an open UTF-8 text handle; `text=False` passes the temp file's path (for writers that open
    it themselves; they raise `WriteFailed` around their own I/O). Temp files left by a killed writer are removed
    first (never a live writer's). The file gets the mode a plain `open()` would give it: an existing file's mode,
    else 0666 less the umask. A failed write (full disk, no permission) is a one-line `OutputError` that says the
    previous file is kept; errors of the code producing the content propagate as they are.
    """
    path = Path(path).expanduser()
    make_folder(path.parent)
    _remove_stale_temps(path)
    try:
        existed = path.exists()
        mode = stat.S_IMODE(path.stat().st_mode) if existed else 0o666 & ~_umask()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc, path.exists()) from None
    try:
        try:
            _guarded(os.fchmod, fd, mode)
            if text:
                handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
                try:
                    write(_GuardedHandle(handle))  # errors of the code producing the rows propagate as they are
                    _guarded(handle.flush)
                    _guarded(os.fsync, handle.fileno())
                except BaseException:
                    try:  # close() flushes what is buffered again: on a full disk that fails too, and is moot
                        handle.close()
                    except OSError:
                        pass
                    raise
                _guarded(handle.close)
            else:
                os.close(fd)
                write(tmp)
                with open(tmp, "rb") as handle:
                    _guarded(os.fsync, handle.fileno())
            _guarded(os.replace, tmp, path)
        except _WriteFailed as exc:
            raise _write_error(path, exc.__cause__ or exc, existed) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _guarded(call: Any, *args: Any) -> Any:
    """`call(*args)` with an OSError turned into `_WriteFailed` (it is the output file's own I/O)."""
    try:
        return call(*args)
    except OSError as exc:
        raise _WriteFailed() from exc


#: for writers given a temp path (`text=False`): raise this from an OSError of their own output I/O
WriteFailed = _WriteFailed


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

        table = pa.Table.from_pylist(_scrub(list(rows)))
        try:
            pq.write_table(table, tmp)
        except OSError as exc:
            raise WriteFailed() from exc

    if suffix == ".parquet":
        return atomic_write(path, write_parquet, text=False)
    return atomic_write(path, write_text)
