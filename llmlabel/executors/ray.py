"""The Ray executor: the same label recipe on a Ray cluster, one labeling engine per actor (per GPU or worker).

How a run goes:

1. The driver reads the data with the reader the local executor uses (`llmlabel.data.Dataset`: same rows, same order,
   labels.json, `limit`), checks it, and cuts it into shards of `ray.shard_size` rows; row i gets the id i.
2. Shards whose Parquet file an earlier run of the same recipe wrote are skipped (a restarted run redoes only what is
   missing). The rest go to the object store as Arrow blocks, one block per shard (`ray.data.from_arrow_refs`), so
   workers need no access to the input files.
3. `map_batches(LabelActor, compute=ActorPoolStrategy(...))`: each actor builds the backend and the Labeler once,
   with the code the local executor uses (`llmlabel.labeling.config.build_engine`), and labels whole shards. Fault
   tolerance is Ray's: a dead actor is restarted (`max_restarts`) and its unfinished shards retried
   (`max_task_retries`); output of a failed attempt is never emitted, so nothing is duplicated.
4. The driver groups the results by shard and writes each finished shard atomically (temp file, then rename) to
   `<output.dir>/shards/shard-000012.parquet`, logging who wrote it in `shards/done.jsonl`.
5. The shards are merged in row order into the predictions file; the label kind's `report` hook evaluates and
   reports them exactly as locally (the executor only schedules; the finish is the kind's).

Labels match the local executor's, with one exception: `calibration: batch` divides out the running mean of the rows
an engine has scored so far, and each actor sees different rows, so those labels can differ (a warning says so).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from llmlabel.errors import LLMLabelError, MissingDependencyError
from llmlabel.executors.base import Executor

log = logging.getLogger("llmlabel")

#: Folder inside `output.dir` that holds the shards, the manifest and the log of finished shards.
SHARD_DIR = "shards"


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401 - the executor needs Ray Data, not only Ray core
    except ImportError:
        raise MissingDependencyError("ray", "executor 'ray'", "pip install 'llmlabel[ray]'") from None
    return ray


def shard_path(folder: Path, index: int) -> Path:
    """The Parquet file of shard `index`."""
    return folder / f"shard-{index:06d}.parquet"


def _row_json(row: dict[str, Any]) -> str:
    # Rows travel as JSON so every value comes back as the local executor would write it (Arrow would coerce
    # mixed-type columns); values JSON cannot hold (dates, bytes) become strings, as in the JSONL output.
    return json.dumps(row, ensure_ascii=False, default=str)


class LabelActor:
    """One labeling engine on a Ray worker: builds the backend and the recipe's Labeler (or method) once, then labels
    batches of rows. Ray Data runs a pool of these (`map_batches(LabelActor, compute=ActorPoolStrategy(...))`).

    Args:
        recipe: the validated recipe, as a dict (`Recipe.model_dump()`).
        task: the `LabelTask` the driver built (its labels may come from a labels.json only the driver can read).
        first_chunk: the data's first `labeling.chunk_size` rows when the calibration takes its prior from the first
            rows labeled; the engine labels them once, unrecorded, so it calibrates exactly as a local run does.
    """

    def __init__(self, recipe: dict[str, Any], task: dict[str, Any], first_chunk: list[dict[str, Any]] | None = None):
        from llmlabel.backends.base import load_backend
        from llmlabel.core.task import LabelTask
        from llmlabel.kinds.label import Recipe
        from llmlabel.labeling.config import build_engine

        start = time.perf_counter()
        # Progress bars of model loading would be forwarded from every actor to the driver's terminal.
        os.environ["TQDM_DISABLE"] = "1"
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        #: a user mistake found while building (e.g. a model path missing on this node). It is raised from the first
        #: batch instead of here: Ray reports a failed actor constructor as a bare "actor died" with the error only in
        #: the text of a traceback, while a task's exception reaches the driver intact, as a one-line error.
        self.error: LLMLabelError | None = None
        try:
            self.recipe = Recipe.model_validate(recipe)
            self.task = LabelTask.model_validate(task)
            self.backend = load_backend(self.recipe.model.backend, model=self.recipe.model.name,
                                        **self.recipe.model.options)
            self.setup = build_engine(self.recipe, self.task, self.backend, cache=None, progress=False)
            self.labeler, self.engine = self.setup
            if first_chunk:
                for _ in self.engine.iter_label(first_chunk):
                    pass
        except LLMLabelError as exc:
            self.error = exc
        self.init_seconds = time.perf_counter() - start
        self.announced = False

    def __call__(self, batch: Any) -> Any:
        """Label a pyarrow batch of (_row_id, _row) into (_row_id, label, confidence, status, row, _worker, _meta):
        `row` is the output row as JSON; `_meta` (first row only) carries this batch's counters for the report."""
        import pyarrow as pa

        if self.error is not None:
            raise self.error
        ids = batch.column("_row_id").to_pylist()
        rows = [json.loads(blob) for blob in batch.column("_row").to_pylist()]
        start = time.perf_counter()
        out = [self.engine.merge(row, result) for row, result in self.engine.iter_label(rows)]
        meta: dict[str, Any] = {"worker": self.worker, "rows": len(rows), "seconds": time.perf_counter() - start}
        if not self.announced:  # once per actor (a restarted actor announces itself again)
            self.announced = True
            meta.update(init_seconds=self.init_seconds, backend=self.backend.name, model=self.backend.model_id)
            if self.setup.has_method:
                meta["method_report"] = json.loads(json.dumps(self.engine.report, default=str))
        labels = [r["label"] if r["label"] is None or isinstance(r["label"], str) else json.dumps(r["label"])
                  for r in out]
        return pa.table({
            "_row_id": pa.array(ids, pa.int64()),
            "label": pa.array(labels, pa.string()),
            "confidence": pa.array([float(r["confidence"]) for r in out], pa.float64()),
            "status": pa.array([r["status"] for r in out], pa.string()),
            "row": pa.array([_row_json(r) for r in out], pa.string()),
            "_worker": pa.array([self.worker] * len(out), pa.string()),
            "_meta": pa.array([json.dumps(meta)] + [None] * (len(out) - 1), pa.string()),
        })


def _calibration(recipe: Any) -> str | None:
    """The calibrator the recipe's Labelers use ('auto' resolved where the Labeler resolves it)."""
    from llmlabel.calibration.base import resolve_calibration

    return resolve_calibration(recipe.labeling.calibration, recipe.labeling.mode, recipe.task.multi_label)


def _needs_priming(recipe: Any) -> bool:
    """Whether engines must first see the data's first chunk to calibrate as a local run does: the calibrator says
    (`Calibrator.needs_warmup`: priors from the texts seen first, or shared by per-row demonstrations). `batch`
    cannot be reproduced this way (see the module doc)."""
    from llmlabel.calibration.base import make_calibrator

    calibrator = make_calibrator(recipe.labeling.calibration, recipe.labeling.mode, recipe.task.multi_label)
    return calibrator is not None and calibrator.needs_warmup(recipe.labeling.selection is not None)


def _portable(recipe: Any) -> dict[str, Any]:
    """The recipe as a dict for the actors, with paths the driver can see made absolute (actors may run elsewhere:
    on other nodes such paths must exist too, e.g. on a shared filesystem)."""
    data = recipe.model_dump()
    for section in (data["labeling"].get("selection"), data["labeling"].get("method")):
        if section and section.get("pool") and Path(section["pool"]["path"]).expanduser().exists():
            section["pool"]["path"] = str(Path(section["pool"]["path"]).expanduser().resolve())
    if Path(data["model"]["name"]).expanduser().exists():
        data["model"]["name"] = str(Path(data["model"]["name"]).expanduser().resolve())
    data["executor"] = "local"  # inside an actor the recipe is labeled in place
    return data


def _fingerprint(recipe: Any, dataset: Any) -> str:
    """What the shards depend on: the labeling settings, the shard size and the data file (path, size, mtime)."""
    from llmlabel.cache import cache_key

    path = dataset.path
    stat = path.stat() if path.is_file() else None
    return cache_key(recipe=recipe.model_dump(include={"model", "data", "task", "labeling"}),
                     shard_size=recipe.ray.shard_size, source=str(path.resolve()) if path.exists() else dataset.source,
                     size=stat.st_size if stat else None, mtime=stat.st_mtime_ns if stat else None)


def _check_backend(recipe: Any) -> None:
    """Fail on the driver, before a cluster starts, for an unknown backend or backend option."""
    from llmlabel.registry import backends

    backends.checked(recipe.model.backend, recipe.model.options, fixed=("model",))


def _user_error(exc: BaseException) -> LLMLabelError | None:
    """The LLMLabelError behind a Ray error (say, a model path missing on a worker), as a fresh one-line error.

    Ray re-raises a remote exception as a RayTaskError that also subclasses the original class, keeps the original
    in `.cause`, and appends its own advice to the message; the user should see the original class and first line.
    """
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, LLMLabelError):
            cls = next(c for c in type(err).__mro__
                       if issubclass(c, LLMLabelError) and "RayTaskError" not in c.__name__)
            lines = [ln for ln in str(err).splitlines() if ln.strip() and "RayTaskError" not in ln
                     and not ln.lstrip().startswith("\x1b")]
            own = getattr(err, "cause", None)
            text = str(own).strip().splitlines()[0] if isinstance(own, LLMLabelError) and str(own).strip() else (
                lines[0] if lines else cls.__name__)
            fresh = cls.__new__(cls)
            Exception.__init__(fresh, text)
            return fresh
        todo += [getattr(err, "cause", None), err.__cause__, err.__context__]
    return None


@contextlib.contextmanager
def _quiet_ray_data() -> Any:
    """Ray Data logs every failed task with its traceback before raising it; the executor re-raises a user mistake as
    one line and anything else with its traceback, so those logs (and its progress and 'finished' notes) are muted."""
    names = ("ray.data._internal.progress", "ray.data._internal.execution.streaming_executor",
             "ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions")
    loggers = [logging.getLogger(name) for name in names]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved):
            lg.setLevel(level)


class _ShardStore:
    """The shard folder: which shards are done, atomic shard writes, the manifest and the log of finished shards."""

    def __init__(self, folder: Path, fingerprint: str, shard_size: int, total: int):
        self.folder = folder
        self.shard_size = shard_size
        self.total = total
        self.count = math.ceil(total / shard_size)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".shard-*.tmp"):  # left by a driver killed while writing
            stale.unlink(missing_ok=True)
        manifest = folder / "manifest.json"
        if manifest.exists():
            try:
                old = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                old = {}
            if old.get("fingerprint") != fingerprint:
                log.warning("%s holds shards of a different recipe or data; starting over", folder)
                for path in folder.glob("shard-*.parquet"):
                    path.unlink()
                (folder / "done.jsonl").unlink(missing_ok=True)
        from llmlabel.io import write_json

        write_json({"fingerprint": fingerprint, "shard_size": shard_size, "rows": total, "shards": self.count},
                   manifest)

    def bounds(self, index: int) -> tuple[int, int]:
        """First row id and end (exclusive) of shard `index`."""
        return index * self.shard_size, min((index + 1) * self.shard_size, self.total)

    def done(self, index: int) -> bool:
        """Whether shard `index` is written whole (a wrong row count means a stale file: it is redone)."""
        import pyarrow.parquet as pq

        path = shard_path(self.folder, index)
        if not path.exists():
            return False
        start, end = self.bounds(index)
        try:
            if pq.read_metadata(path).num_rows == end - start:
                return True
        except Exception:  # noqa: BLE001 - an unreadable shard is redone
            pass
        path.unlink(missing_ok=True)
        return False

    def write(self, index: int, parts: list[Any], seconds: float) -> None:
        """Write shard `index` from its result parts: sorted by row id, checked to hold each of its ids once."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(parts).sort_by("_row_id")
        start, end = self.bounds(index)
        ids = table.column("_row_id").to_pylist()
        if ids != list(range(start, end)):
            raise RuntimeError(f"shard {index}: expected row ids {start}..{end - 1} once each, got {len(ids)} rows "
                               f"({len(set(ids))} distinct); not written")
        workers = sorted(set(table.column("_worker").to_pylist()))
        table = table.drop_columns(["_worker", "_meta"])
        path = shard_path(self.folder, index)
        tmp = self.folder / f".{path.name}.{os.getpid()}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        with open(self.folder / "done.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"shard": index, "rows": end - start, "workers": workers,
                                     "at": round(seconds, 3)}) + "\n")


class RayExecutor(Executor):
    """Labels a recipe's rows on a Ray cluster with a pool of actors, one engine each (see the module doc).

    Settings come from the recipe's `ray:` section (`llmlabel.config.RayConfig`). When Ray is already initialized in
    this process, the executor uses that cluster and leaves it running; otherwise it joins `ray.address` (or
    RAY_ADDRESS), else starts a local cluster, and shuts its connection down at the end.
    """

    name = "ray"

    def execute(self, recipe: Any, ctx: Any, state: Any) -> Any:
        """Label the prepared rows of a label recipe on Ray; write shards and the predictions file; return the
        `llmlabel.kinds.label.Labeled` its `report` hook reads (as the local executor's)."""
        ray = _import_ray()
        cfg = recipe.ray
        dataset, task, progress = state.dataset, state.task, ctx.progress
        _check_backend(recipe)
        if _calibration(recipe) == "batch":
            log.warning("calibration 'batch' divides out the running mean of the rows each engine has scored; "
                        "under the ray executor every actor sees different rows, so labels can differ from a local run")
        total = len(dataset)
        store = _ShardStore(recipe.output.path(SHARD_DIR), _fingerprint(recipe, dataset), cfg.shard_size, total)
        pending = [i for i in range(store.count) if not store.done(i)]
        info: dict[str, Any] = {"name": "ray", "shard_size": cfg.shard_size, "shards": store.count,
                                "shards_reused": store.count - len(pending), "workers": 0}
        meta: list[dict[str, Any]] = []
        start = time.perf_counter()
        if pending:
            started = False
            try:
                started = self._connect(ray, cfg)
                info["connect_seconds"] = round(time.perf_counter() - start, 3)
                with _quiet_ray_data():
                    meta = self._label(ray, recipe, task, dataset, store, pending, info, progress)
            except Exception as exc:
                user = _user_error(exc)
                if user is not None:
                    raise user from None
                raise
            finally:
                if started:
                    ray.shutdown()
        seconds = time.perf_counter() - start
        missing = [i for i in range(store.count) if not shard_path(store.folder, i).exists()]
        if missing:
            raise RuntimeError(f"the ray run ended with {len(missing)} shard(s) unwritten (first: {missing[0]})")
        return self._finish(recipe, task, dataset, store, state.evaluating, meta, info, seconds)

    @staticmethod
    def _connect(ray: Any, cfg: Any) -> bool:
        """Join or start a cluster; returns whether this call initialized Ray (and so must shut it down)."""
        if ray.is_initialized():
            return False
        quiet = dict(logging_level=logging.WARNING, configure_logging=True)
        address = cfg.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(include_dashboard=False, **quiet,
                     object_store_memory=cfg.object_store_mb * 2**20 if cfg.object_store_mb else None)
        return True

    @staticmethod
    def _pool_size(ray: Any, cfg: Any, shards: int) -> tuple[int, float, bool]:
        """(actors, GPUs per actor, whether that many fit the cluster now)."""
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        per_gpu = cfg.num_gpus if cfg.num_gpus is not None else (1.0 if gpus else 0.0)
        fit = [float(resources.get("CPU", 0)) / cfg.num_cpus if cfg.num_cpus else math.inf]
        if per_gpu:
            fit.append(gpus / per_gpu)
        fit += [float(resources.get(k, 0)) / v for k, v in cfg.resources.items() if v]
        fits = max(int(min(fit)) if min(fit) != math.inf else shards, 0)
        wanted = cfg.num_workers or max(fits, 1)
        size = max(min(wanted, shards), 1)
        return size, per_gpu, size <= fits

    def _label(self, ray: Any, recipe: Any, task: Any, dataset: Any, store: _ShardStore, pending: list[int],
               info: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
        """Put the pending shards in the object store, label them with the actor pool, write each as it finishes."""
        import pyarrow as pa
        from llmlabel.terminal import progress_bar

        cfg = recipe.ray
        todo = set(pending)
        put_start = time.perf_counter()
        refs = []
        rows: list[dict[str, Any]] = []
        first_chunk: list[dict[str, Any]] = []
        chunk = recipe.labeling.chunk_size
        for row_id, row in enumerate(dataset):
            if row_id < chunk:
                first_chunk.append(row)
            index = row_id // cfg.shard_size
            if index in todo:
                rows.append(row)
                if row_id + 1 == store.bounds(index)[1]:
                    first = store.bounds(index)[0]
                    refs.append(ray.put(pa.table({
                        "_row_id": pa.array(range(first, first + len(rows)), pa.int64()),
                        "_row": pa.array([_row_json(r) for r in rows], pa.string())})))
                    rows = []
        info["put_seconds"] = round(time.perf_counter() - put_start, 3)
        size, per_gpu, fits = self._pool_size(ray, cfg, len(pending))
        if fits:
            compute = ray.data.ActorPoolStrategy(size=size)
        else:
            log.warning("the cluster has room for fewer than %d labeling actors now; starting with what fits "
                        "(Ray adds the rest as resources appear)", size)
            compute = ray.data.ActorPoolStrategy(min_size=1, max_size=size)
        info.update(workers=size, num_cpus=cfg.num_cpus, num_gpus=per_gpu)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts rows; Ray's would interleave with it
        context.print_on_execution_start = False
        context.raise_original_map_exception = True  # a user mistake raised in an actor reaches us as itself
        # Ray Data's actor pools already restart dead actors without limit and retry their tasks; pass a limit only
        # when the recipe sets one (Ray then still retries the tasks of a restarted actor).
        remote_args = {"max_restarts": cfg.max_restarts} if cfg.max_restarts != -1 else {}
        results = ray.data.from_arrow_refs(refs).map_batches(
            LabelActor, compute=compute, batch_size=cfg.batch_size, batch_format="pyarrow", zero_copy_batch=True,
            fn_constructor_kwargs={"recipe": _portable(recipe), "task": task.model_dump(),
                                   "first_chunk": first_chunk if _needs_priming(recipe) else None},
            num_cpus=cfg.num_cpus, num_gpus=per_gpu or None, resources=cfg.resources or None, **remote_args)
        buffers: dict[int, list[Any]] = defaultdict(list)
        counts: Counter = Counter()
        meta: list[dict[str, Any]] = []
        start = time.perf_counter()
        reused = store.total - sum(store.bounds(i)[1] - store.bounds(i)[0] for i in pending)
        bar = progress_bar(total=store.total, initial=reused, disable=not progress, unit="row",
                   desc=f"labeling (ray, {size} workers)")
        driver = 0.0  # time the driver spends on results (the one serial part: it bounds the cluster's rate)
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="pyarrow"):
                tick = time.perf_counter()
                meta += [json.loads(m) for m in batch.column("_meta").to_pylist() if m]
                shards = [rid // cfg.shard_size for rid in batch.column("_row_id").to_pylist()]
                for index in sorted(set(shards)):
                    part = batch.filter(pa.array([s == index for s in shards]))
                    buffers[index].append(part)
                    counts[index] += part.num_rows
                    lo, hi = store.bounds(index)
                    if counts[index] == hi - lo:
                        store.write(index, buffers.pop(index), time.perf_counter() - start)
                        todo.discard(index)
                    elif counts[index] > hi - lo:
                        raise RuntimeError(f"shard {index} received {counts[index]} rows for {hi - lo} ids")
                bar.update(batch.num_rows)
                driver += time.perf_counter() - tick
        finally:
            bar.close()
        info["labeling_seconds"] = round(time.perf_counter() - start, 3)
        info["collect_seconds"] = round(driver, 3)
        return meta

    @staticmethod
    def _finish(recipe: Any, task: Any, dataset: Any, store: _ShardStore, evaluating: bool,
                meta: list[dict[str, Any]], info: dict[str, Any], seconds: float) -> Any:
        """Merge the shards in row order into the predictions file; count what the report needs."""
        from llmlabel.io import write_rows
        from llmlabel.kinds.label import GoldTally, Labeled

        tally = GoldTally()
        statuses: Counter = Counter()
        truncated = [0]
        merge_start = time.perf_counter()
        rows = _merged_rows(task, dataset, store, evaluating, tally, statuses, truncated)
        predictions = write_rows(rows, recipe.output.path(recipe.output.predictions))
        info["merge_seconds"] = round(time.perf_counter() - merge_start, 3)
        computed = sum(m["rows"] for m in meta)
        stats = {"rows": store.total, "cached": store.total - computed, "computed": computed,
                 "truncated": truncated[0], "statuses": dict(statuses), "seconds": round(seconds, 3),
                 "items_per_second": round(store.total / seconds, 3) if seconds else 0.0}
        per_worker: dict[str, dict[str, float]] = {}
        for m in meta:
            entry = per_worker.setdefault(m["worker"], {"rows": 0, "seconds": 0.0})
            entry["rows"] += m["rows"]
            entry["seconds"] = round(entry["seconds"] + m["seconds"], 3)
            if "init_seconds" in m:
                entry["init_seconds"] = round(m["init_seconds"], 3)
        info["per_worker"] = per_worker
        announced = next((m for m in meta if "backend" in m), {})
        return Labeled(predictions, store.total, stats, announced.get("backend", recipe.model.backend),
                       announced.get("model", recipe.model.name), tally, {"executor": info},
                       announced.get("method_report", {}) if recipe.labeling.method is not None else None)


def _merged_rows(task: Any, dataset: Any, store: _ShardStore, evaluating: bool, tally: Any, statuses: Counter,
                 truncated: list[int]) -> Any:
    """The output rows of every shard in row order (checked against the data), counted as they pass."""
    import pyarrow.parquet as pq

    source = iter(dataset)
    expected = 0
    for index in range(store.count):
        table = pq.read_table(shard_path(store.folder, index), columns=["_row_id", "row"])
        for row_id, blob in zip(table.column("_row_id").to_pylist(), table.column("row").to_pylist()):
            if row_id != expected:
                raise RuntimeError(f"shard {index}: row id {row_id} where {expected} was expected")
            expected += 1
            out = json.loads(blob)
            original = next(source)
            statuses[out["status"]] += 1
            truncated[0] += int(bool(out.get("truncated")))
            if evaluating:  # rows without gold are labeled, counted, not evaluated
                tally.add(task.gold(original), out["label"], out["confidence"])
            yield out
    if expected != store.total:
        raise RuntimeError(f"the shards hold {expected} rows, the data {store.total}")
