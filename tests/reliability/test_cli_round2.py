"""Reliability round 2 (issue 19): each defect a careless user met on day one, reproduced through the real CLI.

Every bad input ends in one line and exit 2, every I/O fault in one line that says what was kept, an interrupt in
exit 130 with a line saying what is cached, and no run destroys another's work.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clihelpers import LLMLABEL, cli, in_namespace, one_error_line
from helpers import read_jsonl, write_jsonl
from relhelpers import sentiment_rows

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


def _slow_recipe(tmp_path: Path, rows: int, delay: float = 0.01, **output) -> Path:
    """The issue's `R`: the fake backend with a delay per scored prompt, over `rows` rows."""
    data = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(rows))
    recipe = {"name": "r", "model": {"backend": "fake", "options": {"delay": delay}}, "data": {"path": str(data)},
              "task": {"labels": ["negative", "positive"]}, "labeling": {"chunk_size": 32},
              "output": {"dir": str(tmp_path / "out"), **output}}
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe), encoding="utf-8")
    return path


def _cached_rows(cache: Path) -> int:
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# -- 1. Ctrl-C ---------------------------------------------------------------------------------------------------------
def test_ctrl_c_exits_130_with_a_line_saying_what_is_cached(tmp_path):
    recipe = _slow_recipe(tmp_path, 2000)
    proc = subprocess.Popen([LLMLABEL, "run", str(recipe), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    _wait_for(lambda: _cached_rows(tmp_path / "out" / "cache.sqlite") >= 64)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted after ") and "cache.sqlite" in lines[0] and "resume" in lines[0]
    assert "no predictions.jsonl written" in lines[0]
    assert not (tmp_path / "out" / "predictions.jsonl").exists()
    assert _cached_rows(tmp_path / "out" / "cache.sqlite") >= 64  # the work done is kept


# -- 2. two runs, one output folder ------------------------------------------------------------------------------------
def test_a_second_run_on_a_busy_output_folder_fails_at_once_naming_the_first(tmp_path):
    recipe = _slow_recipe(tmp_path, 400)
    first = subprocess.Popen([LLMLABEL, "run", str(recipe), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path)
    lock = tmp_path / "out" / ".llmlabel.lock"
    _wait_for(lambda: lock.exists() and str(first.pid) in lock.read_text())
    second = subprocess.run([LLMLABEL, "run", str(recipe), "-q"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=60)
    out, err = first.communicate(timeout=90)
    assert second.returncode == 2, second
    line = one_error_line(second.stderr)
    assert f"output folder {tmp_path / 'out'} is in use by another llmlabel run (pid {first.pid} since " in line
    assert "give this run another folder (--output / output.dir)" in line
    assert first.returncode == 0, err  # the first run finishes, whole
    assert [p["id"] for p in read_jsonl(tmp_path / "out" / "predictions.jsonl")] == list(range(400))
    # the lock is released with the run: the same command now works
    again = subprocess.run([LLMLABEL, "run", str(recipe), "-q", "--set", "data.limit=10"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    assert again.returncode == 0, again.stderr


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    recipe = _slow_recipe(tmp_path, 2000)
    proc = subprocess.Popen([LLMLABEL, "run", str(recipe), "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=tmp_path)
    lock = tmp_path / "out" / ".llmlabel.lock"
    _wait_for(lambda: lock.exists() and str(proc.pid) in lock.read_text())
    proc.kill()
    proc.wait(timeout=30)
    again = subprocess.run([LLMLABEL, "run", str(recipe), "-q", "--set", "data.limit=40"], capture_output=True,
                           text=True, cwd=tmp_path, timeout=60)
    assert again.returncode == 0, again.stderr


def test_atomic_write_never_deletes_a_live_writers_temp_file(tmp_path):
    from llmlabel.io import atomic_write

    target = tmp_path / "predictions.jsonl"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".predictions.jsonl.{sleeper.pid}-abcd1234.tmp"  # another process writing right now
        live.write_text("in progress")
        dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True).stdout.strip()
        dead = tmp_path / f".predictions.jsonl.{dead_pid}-efgh5678.tmp"  # left by a killed writer
        dead.write_text("abandoned")
        atomic_write(target, lambda handle: handle.write("{}\n"))
        assert live.exists(), "deleted a live writer's temp file"
        assert not dead.exists(), "kept a dead writer's temp file"
        assert target.read_text() == "{}\n"
    finally:
        sleeper.kill()
        sleeper.wait()


# -- 3. a row without gold ---------------------------------------------------------------------------------------------
def test_rows_without_gold_are_labeled_and_counted_not_a_crash(tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text('{"text":"good film","label":"positive"}\n{"text":"no gold"}\n{"text":"x","label":null}\n')
    code, out, err = cli(capsys, "label", str(data), "--labels", "negative,positive", "--backend", "fake",
                         "-o", str(tmp_path / "o"), "-q")
    assert code == 0, err
    assert "2 rows have no gold label: labeled, not evaluated" in out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["metrics"]["n"] == 1 and report["metrics"]["rows_without_gold"] == 2
    assert len(read_jsonl(tmp_path / "o" / "predictions.jsonl")) == 3


# -- 4 and 12. label sets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels, message", [
    ("neg,neg", "error: task: duplicate labels: neg"),
    ("", "error: --labels is empty; give comma-separated label names, e.g. --labels negative,positive"),
    ("   ", "error: --labels is empty; give comma-separated label names, e.g. --labels negative,positive"),
    ("billing,,technical", "error: --labels 'billing,,technical': label 2 of 3 is empty (two commas in a row or a "
                           "comma at an end?)"),
    ("billing,technical,", "error: --labels 'billing,technical,': label 3 of 3 is empty (two commas in a row or a "
                           "comma at an end?)"),
])
def test_label_flag_errors_say_the_reason(tmp_path, capsys, labels, message):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    code, _, err = cli(capsys, "label", str(data), "--labels", labels, "--backend", "fake", "-o", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err) == message


@pytest.mark.parametrize("content, message", [
    ('["a", "b", "a"]', "labels.json: duplicate labels: a"),
    ('["a", ""]', "labels.json: label 2 is not a non-empty name (got \"\")"),
    ('["a", null]', "labels.json: label 2 is not a non-empty name (got null)"),
    ("negative\npositive\n", "labels.json is not valid JSON (line 1: Expecting value); it must be a JSON list of "
                             'label names, e.g. ["negative", "positive"]'),
])
def test_labels_json_errors_say_the_reason(tmp_path, capsys, content, message):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    (tmp_path / "labels.json").write_text(content)
    code, _, err = cli(capsys, "label", str(data), "--backend", "fake", "-o", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err) == f"error: {tmp_path / message}"


# -- 5. alias bombs through --set ------------------------------------------------------------------------------------
def test_an_alias_bomb_passed_through_set_is_refused_quickly(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"backend": "fake"}, "data": {"path": str(data)},
                                  "task": {"labels": ["a", "b"]}, "output": {"dir": str(tmp_path / "o")}}))
    layers = ["&l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        layers.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    bomb = "[" + ", ".join(layers) + "]"  # 10^9 values once expanded
    start = time.perf_counter()
    code, _, err = cli(capsys, "run", str(recipe), "--set", f"labeling.examples={bomb}")
    assert time.perf_counter() - start < 10
    assert code == 2
    assert one_error_line(err) == ("error: --set labeling.examples: the recipe expands to more than 100,000 values "
                                   "(deeply nested YAML aliases?); write it out without them")


# -- 6. tracebacks where one line is promised --------------------------------------------------------------------------
def test_a_recipe_that_is_not_utf8_or_is_a_folder_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    code, _, err = cli(capsys, "run", str(bad))
    assert code == 2
    assert one_error_line(err) == f"error: recipe {bad} is not UTF-8 text (byte 0xe9 at offset 9); save it as UTF-8"
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    code, _, err = cli(capsys, "run", str(folder))
    assert code == 2 and one_error_line(err) == f"error: recipe {folder} is a folder, not a YAML file"


def test_a_json_file_of_non_objects_is_one_line(tmp_path, capsys):
    data = tmp_path / "n.json"
    data.write_text("[1, 2, 3]")
    code, _, err = cli(capsys, "label", str(data), "--labels", "a,b", "--backend", "fake", "-o", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err) == (f'error: {data} row 1 is not a JSON object (got 1); rows look like {{"text": ..., '
                                   '"label": ...}')


def test_an_output_dir_that_is_a_device_or_a_file_is_one_line(tmp_path, capsys):
    recipe = _slow_recipe(tmp_path, 4, delay=0)
    code, _, err = cli(capsys, "run", str(recipe), "--set", "output.dir=/dev/full")
    assert code == 2
    assert one_error_line(err) == "error: output folder /dev/full is not a folder (a file or a device is in the way)"
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "run", str(recipe), "--set", f"output.dir={tmp_path / 'file'}")
    assert code == 2 and "is not a folder" in one_error_line(err)


def _read_only(folder: str) -> str:
    """Shell lines that make `folder` read-only in this mount namespace (a bind mount remounted read-only)."""
    return f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}\n"


def test_read_only_output_folders_are_one_line(tmp_path):
    recipe = _slow_recipe(tmp_path, 4, delay=0)
    (tmp_path / "ro").mkdir()
    script = _read_only(str(tmp_path / "ro")) + f"""
"$LLMLABEL" run {recipe} --set output.dir={tmp_path}/ro/sub -q; echo "rc=$?"
"$LLMLABEL" run {recipe} --set output.dir={tmp_path}/ro -q; echo "rc=$?"
"$LLMLABEL" run {recipe} --set output.dir={tmp_path}/ro --set output.cache=null -q; echo "rc=$?"
"""
    result = in_namespace(script, tmp_path)
    assert result.stdout.split() == ["rc=2", "rc=2", "rc=2"], result
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: cannot create output folder {tmp_path}/ro/sub: Read-only file system",
        f"error: output folder {tmp_path}/ro is not writable (Read-only file system); choose another one "
        "(--output / output.dir) or fix its permissions",
        f"error: output folder {tmp_path}/ro is not writable (Read-only file system); choose another one "
        "(--output / output.dir) or fix its permissions",
    ], result.stderr


def test_a_full_disk_while_writing_predictions_keeps_the_previous_ones(tmp_path):
    small = write_jsonl(tmp_path / "small.jsonl", sentiment_rows(20))
    big = write_jsonl(tmp_path / "big.jsonl", sentiment_rows(3000))
    out = tmp_path / "full"
    out.mkdir()
    flags = "--labels negative,positive --backend fake -q --no-cache"
    script = f"""mount -t tmpfs -o size=256k tmpfs {out}
"$LLMLABEL" label {small} {flags} -o {out} >/dev/null; echo "rc=$?"
md5sum {out}/predictions.jsonl
"$LLMLABEL" label {big} {flags} -o {out} >/dev/null; echo "rc=$?"
md5sum {out}/predictions.jsonl
ls -a {out}
"""
    result = in_namespace(script, tmp_path)
    lines = result.stdout.splitlines()
    assert lines[0] == "rc=0" and any(line == "rc=2" for line in lines), result
    sums = [line.split()[0] for line in lines if "predictions.jsonl" in line and len(line.split()[0]) == 32]
    assert len(sums) == 2 and sums[0] == sums[1], "the previous predictions were damaged"
    assert not any(name.endswith(".tmp") for name in lines), "a partial temp file was left behind"
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {out}/predictions.jsonl: No space left on device; the previous predictions.jsonl is "
        "kept unchanged"], result.stderr


# -- 7. the umask ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_output_files_honour_the_umask(tmp_path, capsys, umask, mode):
    data = write_jsonl(tmp_path / "d.jsonl", sentiment_rows(4))
    old = os.umask(umask)
    try:
        code, _, err = cli(capsys, "label", str(data), "--labels", "negative,positive", "--backend", "fake",
                           "-o", str(tmp_path / "o"), "-q")
    finally:
        os.umask(old)
    assert code == 0, err
    for name in ("predictions.jsonl", "report.json"):
        assert stat.S_IMODE((tmp_path / "o" / name).stat().st_mode) == mode, name
    # SQLite creates its file 0644 less the umask (its compile-time default): never wider than the others
    assert stat.S_IMODE((tmp_path / "o" / "cache.sqlite").stat().st_mode) == 0o644 & ~umask


def test_a_rewritten_output_keeps_the_mode_it_was_given(tmp_path):
    from llmlabel.io import atomic_write

    target = tmp_path / "report.json"
    atomic_write(target, lambda handle: handle.write("{}"))
    target.chmod(0o600)  # the user restricted it: a re-run does not widen it again
    atomic_write(target, lambda handle: handle.write("{}"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# -- 9. flag mistakes --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["label", "{data}", "--bogus"], "error: No such option: --bogus (Possible options: --verbose) (see 'llmlabel label --help')"),
    (["run"], "error: Missing argument 'recipe'. (see 'llmlabel run --help')"),
    (["foo"], "error: No such command 'foo'. (see 'llmlabel --help')"),
    (["label", "{data}", "--limit", "abc"], "error: Invalid value for '--limit': Input should be a valid integer, "
                                            "unable to parse string as an integer (see 'llmlabel label --help')"),
    (["label", "{data}", "--quiet", "true"], "error: Got unexpected extra argument(s) (true) "
                                             "(see 'llmlabel label --help')"),
])
def test_flag_mistakes_are_one_line_and_exit_2(tmp_path, argv, message):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    argv = [a.replace("{data}", str(data)) for a in argv]
    result = subprocess.run([LLMLABEL, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                            env=dict(os.environ, COLUMNS="200"))  # the console script: what a user runs
    assert result.returncode == 2, result
    assert one_error_line(result.stderr) == message


def test_help_shows_no_type_after_boolean_flags(capsys):
    for argv in (["label", "--help"], ["run", "--help"], ["--help"], ["recipes", "list", "--help"]):
        code, out, _ = cli(capsys, *argv)
        assert code == 0 and "--help" in out
        assert "<bool>" not in out, argv
    code, out, _ = cli(capsys, "label", "--help")
    assert "<int>" in out and "<path>" in out  # value options keep their type


def test_typer_is_pinned_to_the_series_whose_exceptions_main_handles():
    import tomllib

    from helpers import REPO

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "typer>=0.29,<0.30" in deps


# -- 10. a wrong model name --------------------------------------------------------------------------------------------
def test_an_unknown_model_name_fails_at_once_with_the_closest_name(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    start = time.perf_counter()
    code, _, err = cli(capsys, "label", str(data), "--labels", "a,b", "--model", "smolm2", "-o", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err) == ("error: flags: 'model': unknown model 'smolm2' (did you mean 'smollm2'?); give "
                                   "smollm2 (the embedded default), a Hugging Face model folder, a .gguf file, or a "
                                   "Hub id org/name")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"model": {"name": "smolm2"}, "data": {"path": str(data)},
                                  "task": {"labels": ["a", "b"]}}))
    code, _, err = cli(capsys, "run", str(recipe))
    assert code == 2 and "unknown model 'smolm2' (did you mean 'smollm2'?)" in one_error_line(err)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "o").exists()  # nothing started


def test_a_hub_id_that_is_not_cached_fails_at_once_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    start = time.perf_counter()
    code, _, err = cli(capsys, "label", str(data), "--labels", "a,b", "--model", "nobody/no-such-model-xyz",
                       "-o", str(tmp_path / "o"))
    assert code == 2 and time.perf_counter() - start < 10
    assert one_error_line(err).startswith("error: flags: 'model': model 'nobody/no-such-model-xyz' is not in the "
                                          "local Hugging Face cache and the Hub cannot be reached (offline)")


# -- 11. eval never scores predictions against themselves --------------------------------------------------------------
def test_eval_without_a_gold_column_names_the_columns(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"text": "a", "label": "pos", "confidence": 0.9},
                                               {"text": "b", "label": "neg", "confidence": 0.8}])
    code, out, err = cli(capsys, "eval", str(preds))
    assert code == 2 and "accuracy" not in out
    assert one_error_line(err) == (f"error: {preds} has no gold column 'gold_label'; its columns: text, label, "
                                   "confidence; name the gold column with --gold-field")
    code, _, err = cli(capsys, "eval", str(preds), "--gold-field", "label")
    assert code == 2
    assert one_error_line(err) == ("error: --gold-field and --pred-field are both 'label': that scores a column "
                                   "against itself")


def test_eval_skips_rows_without_gold_and_checks_its_flags(tmp_path, capsys):
    preds = write_jsonl(tmp_path / "p.jsonl", [{"gold_label": "pos", "label": "pos", "confidence": 0.9},
                                               {"gold_label": None, "label": "neg", "confidence": 0.8},
                                               {"gold_label": "neg", "label": "pos", "confidence": 0.7}])
    code, out, err = cli(capsys, "eval", str(preds))
    assert code == 0, err
    assert "rows 2   accuracy 0.5000" in out and "1 rows have no gold label in 'gold_label': not evaluated" in out
    code, _, err = cli(capsys, "eval", str(preds), "--labels", "pos")
    assert code == 2 and "unknown gold label in column 'gold_label' (not in --labels) 'neg'" in one_error_line(err)
    bad = write_jsonl(tmp_path / "b.jsonl", [{"gold_label": "pos", "label": "pos", "confidence": "high"}])
    code, _, err = cli(capsys, "eval", str(bad))
    assert code == 2 and "column 'confidence' holds a value that is not a number" in one_error_line(err)


# -- minor items: decided and documented -------------------------------------------------------------------------------
def test_non_string_texts_numbers_are_labeled_lists_and_dicts_are_skipped(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": 12345}, {"text": ["a", "b"]}, {"text": {"k": 1}},
                                              {"text": None}, {"text": True}])
    code, _, err = cli(capsys, "label", str(data), "--labels", "a,b", "--backend", "fake", "-o", str(tmp_path / "o"),
                       "-q")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "o" / "predictions.jsonl")
    assert [r["status"] for r in rows] == ["ok", "skipped", "skipped", "skipped", "ok"]
    assert [r["reason"] for r in rows] == [None, "text is a list, not a string", "text is a dict, not a string",
                                           "empty text", None]


def test_a_one_label_task_warns(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}])
    # not -q: -q prints only results and errors (warnings then go to the run's llmlabel.log, checked below)
    result = subprocess.run([LLMLABEL, "label", str(data), "--labels", "spam", "--backend", "fake",
                             "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    quiet = subprocess.run([LLMLABEL, "label", str(data), "--labels", "spam", "--backend", "fake", "-q",
                            "-o", str(tmp_path / "q")], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 0 and not quiet.stderr, quiet.stderr
    assert "the task has one label ('spam')" in (tmp_path / "q" / "llmlabel.log").read_text()
    assert [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line] == [
        "llmlabel: the task has one label ('spam'): every labeled row gets it with confidence 1.0; add the "
        "alternative (e.g. 'other') or set multi_label for a yes/no decision"]


@pytest.mark.parametrize("content, line, got", [("text,label\ngood, fun film,positive\n", 2, 3),
                                                ("text,label\nfine,negative\nshort\n", 3, 1)])
def test_a_ragged_csv_row_is_an_error_naming_its_line(tmp_path, capsys, content, line, got):
    data = tmp_path / "d.csv"
    data.write_text(content)
    code, _, err = cli(capsys, "label", str(data), "--labels", "negative,positive", "--backend", "fake",
                       "-o", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err) == (f"error: {data} line {line} has {got} field(s) but the header has 2; quote fields "
                                   "that contain commas")


def test_a_csv_with_a_one_megabyte_text_is_read(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "x" * 1_000_000 + ",positive\n")
    code, _, err = cli(capsys, "label", str(data), "--labels", "negative,positive", "--backend", "fake",
                       "-o", str(tmp_path / "o"), "-q")
    assert code == 0, err


# -- other members of these families -----------------------------------------------------------------------------------
def test_a_hub_dataset_name_fails_at_once_when_the_hub_is_unreachable(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    code, _, err = cli(capsys, "label", "some-user/no-such-dataset", "--labels", "a,b", "--backend", "fake",
                       "-o", str(tmp_path / "o"))
    assert code == 2 and time.perf_counter() - start < 10
    assert one_error_line(err).startswith("error: data 'some-user/no-such-dataset' is not a file or folder here, "
                                          "and the Hugging Face Hub cannot be reached")


def test_stdout_on_a_full_disk_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        result = subprocess.run([LLMLABEL, "recipes", "list"], stdout=full, stderr=subprocess.PIPE, text=True,
                                timeout=60)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == "error: No space left on device"


def test_the_python_api_holds_the_output_folder_too(tmp_path):
    """`run_recipe` and `Recipe.run` take the same lock as the CLI, and nest (a run inside a run shares it)."""
    from llmlabel.config import load_recipe
    from llmlabel.errors import OutputError
    from llmlabel.outputs import hold_output_folder
    from llmlabel import run_recipe

    recipe = load_recipe(_slow_recipe(tmp_path, 4, delay=0))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from llmlabel.outputs import "
                               "hold_output_folder\nwith hold_output_folder(sys.argv[1]):\n print('held', "
                               "flush=True); time.sleep(60)", str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=rf"is in use by another llmlabel run \(pid {holder.pid} since"):
            run_recipe(recipe, progress=False)
    finally:
        holder.kill()
        holder.wait()
    with hold_output_folder(tmp_path / "out"):
        assert run_recipe(recipe, progress=False)["rows"] == 4  # nested in this process's own hold
        assert recipe.run(progress=False)["rows"] == 4
