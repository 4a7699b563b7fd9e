"""Fast checks of what a new user meets first: the shipped sample (`llmlabel:`), Hub dataset names, the lazy backend,
the CLI's quiet and verbose output, and a run saved as a Hugging Face DatasetDict with a dataset card."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, read_jsonl
from llmlabel.data import Dataset
from llmlabel.errors import DataError

SAMPLE = REPO / "llmlabel" / "samples" / "sst2"


# -- the shipped sample ----------------------------------------------------------------------------------------------
def test_sample_names_resolve_to_package_files():
    rows = list(Dataset("llmlabel:sst2/test.jsonl"))
    assert len(rows) == 300 and set(rows[0]) == {"text", "label"}
    assert {r["label"] for r in rows} == {"negative", "positive"}
    folder = Dataset("llmlabel:sst2")  # the folder: split files + labels.json, like any data folder
    assert folder.path.name == "test.jsonl" and folder.labels_file == SAMPLE / "labels.json"
    csv_rows = list(Dataset("llmlabel:sst2/reviews.csv"))
    assert len(csv_rows) == 50 and list(csv_rows[0]) == ["id", "review", "sentiment"]
    assert [r["review"] for r in csv_rows] == [r["text"] for r in rows[:50]]


def test_unknown_sample_names_are_one_line_errors():
    with pytest.raises(DataError) as err:
        Dataset("llmlabel:sst")
    assert str(err.value) == "unknown shipped sample 'llmlabel:sst' (did you mean 'llmlabel:sst2'?); valid: llmlabel:sst2"
    with pytest.raises(DataError) as err:
        Dataset("llmlabel:sst2/tset.jsonl")
    assert str(err.value) == ("unknown file in llmlabel:sst2 'tset.jsonl' (did you mean 'test.jsonl'?); valid: "
                              "labels.json, reviews.csv, test.jsonl")


def test_sample_is_the_head_of_the_shared_split_and_says_where_it_is_from(shared_data):
    shared = (shared_data / "sst2" / "test.jsonl").read_bytes().splitlines(keepends=True)[:300]
    assert (SAMPLE / "test.jsonl").read_bytes() == b"".join(shared)
    source = (SAMPLE / "SOURCE.md").read_text()
    assert "License: repo is Apache-2.0 (code); no separate data license stated" in source
    assert "tonyzhaozh/few-shot-learning" in source


def test_sample_files_are_package_data():
    """Every sample file matches a package-data pattern of pyproject.toml, so wheels carry it."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "llmlabel.samples" in config["tool"]["setuptools"]["packages"]
    patterns = config["tool"]["setuptools"]["package-data"]["llmlabel.samples"]
    for file in SAMPLE.iterdir():
        name = f"sst2/{file.name}"
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name


def test_quickstart_recipe_reads_the_sample():
    from llmlabel.config import load_recipe

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert recipe.data.path == "llmlabel:sst2/test.jsonl" and recipe.data.limit == 200


def test_a_hub_dataset_name_goes_to_datasets_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, split, streaming):
        calls.append((name, split, streaming))
        return [{"sentence": "a fine film", "label": "positive"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    # the reachability check (an unreachable Hub is a one-line error) would answer offline here: pretend it is up
    monkeypatch.setattr("llmlabel.models.hub_reachable", lambda *a, **k: True)
    assert list(Dataset("stanfordnlp/sst2", split="validation")) == [{"sentence": "a fine film", "label": "positive"}]
    assert set(calls) == {("stanfordnlp/sst2", "validation", True)}  # (list() also asks the length: two passes)


# -- the lazy backend ------------------------------------------------------------------------------------------------
def test_lazy_backend_loads_only_when_a_row_needs_computing(tmp_path):
    from llmlabel.backends.fake import FakeBackend
    from llmlabel.backends.lazy import LazyBackend
    from llmlabel.cache import ResultCache
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    loads = []

    def load():
        loads.append(1)
        return FakeBackend()

    task = LabelTask(labels=["negative", "positive"])
    texts = [f"a positive review number {i}" for i in range(20)]
    cache = ResultCache(tmp_path / "c.sqlite")
    first = Labeler(LazyBackend(FakeBackend(), load), task, cache=cache).label_texts(texts)
    assert len(loads) == 1
    lazy = LazyBackend(FakeBackend(), load)
    again = Labeler(lazy, task, cache=cache).label_texts(texts)
    assert len(loads) == 1 and not lazy.loaded  # every row (and the calibration prior) came from the cache
    assert [r.label_probs for r in again] == [r.label_probs for r in first]
    Labeler(lazy, task, cache=cache).label_texts(texts + ["one new negative row"])
    assert len(loads) == 2 and lazy.loaded
    cache.close()


def test_fully_cached_run_reports_that_the_model_was_not_loaded(tmp_path, monkeypatch):
    from llmlabel.backends import lazy
    from llmlabel.backends.fake import FakeBackend
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe

    # the fake backend has no tokenizer front of its own: give it one, as transformers and vllm have
    monkeypatch.setattr(FakeBackend, "describe", classmethod(lambda cls, model=None, **o: FakeBackend(model, **o)),
                        raising=False)
    recipe = load_recipe(data={"model": {"backend": "fake"}, "data": {"path": "llmlabel:sst2", "limit": 30},
                               "output": {"dir": str(tmp_path)}})
    assert run_recipe(recipe, progress=False)["model_loaded"] is True
    built = []
    init = FakeBackend.__init__
    monkeypatch.setattr(FakeBackend, "__init__", lambda self, *a, **k: (built.append(1), init(self, *a, **k))[1])
    again = run_recipe(recipe, progress=False)
    assert again["model_loaded"] is False and again["stats"]["cached"] == 30
    # only the front was built: nothing after labeling (the report's sections) loaded the model either
    assert len(built) == 1
    assert json.loads((tmp_path / "report.json").read_text())["model_loaded"] is False
    assert isinstance(lazy.lazy_backend("fake"), lazy.LazyBackend)


# -- the terminal ----------------------------------------------------------------------------------------------------
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmlabel.cli", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


NOISY = """
import os, subprocess, sys, warnings, logging
print("python print to stdout"); print("python print to stderr", file=sys.stderr)
os.write(1, b"C-level write to fd 1\\n"); os.write(2, b"C-level write to fd 2\\n")
subprocess.run([sys.executable, "-c", "import sys; print('child process output', file=sys.stderr)"])
warnings.warn("a FutureWarning from a library", FutureWarning)
logging.getLogger("transformers").warning("a library WARNING line")
"""


def test_owned_terminal_sends_every_kind_of_library_output_to_the_log(tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text(
        "import sys\nfrom llmlabel.terminal import owned, progress_bar, note\n"
        f"with owned({str(tmp_path / 'run.log')!r}, quiet=QUIET):\n"
        "    note('converting the model (once) ...')\n"
        "    bar = progress_bar(total=3, desc='labeling')\n"
        f"    exec({NOISY!r})\n"
        "    bar.update(3); bar.close()\n"
        "print('result line')\n")
    for quiet in (False, True):
        (tmp_path / "run.log").unlink(missing_ok=True)
        code = script.read_text().replace("QUIET", str(quiet))
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert proc.returncode == 0, proc.stdout
        log = (tmp_path / "run.log").read_text()
        for line in ("python print to stdout", "python print to stderr", "C-level write to fd 1",
                     "C-level write to fd 2", "child process output", "a FutureWarning from a library",
                     "a library WARNING line"):
            assert line in log and line not in proc.stdout, (line, proc.stdout)
        assert "converting the model (once)" in log  # llmlabel's own notes: in the log, and on the terminal unless -q
        if quiet:
            assert proc.stdout == "result line\n"
        else:
            assert "llmlabel: converting the model (once) ..." in proc.stdout and "labeling" in proc.stdout
            assert proc.stdout.endswith("result line\n")


def test_quiet_run_prints_only_the_result_lines(tmp_path):
    proc = _cli(tmp_path, "run", str(REPO / "recipes" / "quickstart.yaml"), "-q", "--set", "model.backend=fake",
                "--set", "model.options={}", "--set", f"output.dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("labeled 200 rows with fake (score mode) in ")
    assert lines[-3:] == [f"predictions: {tmp_path / 'out' / 'predictions.jsonl'}",
                          f"report: {tmp_path / 'out' / 'report.json'}",
                          f"html report: {tmp_path / 'out' / 'report.html'}"]
    assert not [line for line in lines if "%|" in line or "llmlabel:" in line]


def test_verbose_shows_llmlabel_info_and_writes_no_log(tmp_path):
    proc = _cli(tmp_path, "label", "llmlabel:sst2", "--backend", "fake", "--limit", "5", "-o", "out", "--verbose")
    assert proc.returncode == 0, proc.stdout
    assert not (tmp_path / "out" / "llmlabel.log").exists()
    assert "labeled 5 rows with fake" in proc.stdout


# -- results as a Hugging Face dataset -------------------------------------------------------------------------------
def test_hf_dataset_output_loads_back_with_its_card(tmp_path):
    from datasets import DatasetDict, load_from_disk
    from huggingface_hub import DatasetCard

    proc = _cli(tmp_path, "label", "llmlabel:sst2/reviews.csv", "--text-field", "review", "--label-field", "sentiment",
                "--backend", "fake", "-o", "out", "--hf-dataset", "-q")
    assert proc.returncode == 0, proc.stdout
    folder = tmp_path / "out" / "hf_dataset"
    assert f"dataset (datasets.load_from_disk, push_to_hub): {Path('out') / 'hf_dataset'}" in proc.stdout
    data = load_from_disk(str(folder))
    assert isinstance(data, DatasetDict) and list(data) == ["train"]
    predictions = read_jsonl(tmp_path / "out" / "predictions.jsonl")
    assert data["train"].num_rows == 50 == len(predictions)
    assert data["train"]["label"] == [r["label"] for r in predictions]
    assert data["train"]["sentiment"] == [r["sentiment"] for r in predictions]
    assert data["train"][0]["label_probs"] == predictions[0]["label_probs"]
    card = DatasetCard.load(folder / "README.md")
    assert card.data.task_categories == ["text-classification"] and card.data.size_categories == ["n<1K"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    text = card.text
    for fragment in ("- `negative`", "- `positive`", f"model id `{report['model']}`", "prompt: `label.v1`",
                     f"- accuracy: {report['metrics']['accuracy']:.4f}", "calibration: batch",
                     "row texts: ", "labels as scored: `negative` 1"):
        assert fragment in text, fragment
    # split named after the data file when it names one
    proc = _cli(tmp_path, "label", "llmlabel:sst2/test.jsonl", "--backend", "fake", "--limit", "10", "-o", "t",
                "--hf-dataset", "-q")
    assert proc.returncode == 0 and list(load_from_disk(str(tmp_path / "t" / "hf_dataset"))) == ["test"]


def test_labeling_bar_moves_while_the_backend_scores_a_chunk():
    """Backends report finished prompts (`llmlabel.terminal.prompts_done`); the bar follows within a chunk."""
    from llmlabel import terminal
    from llmlabel.backends.fake import FakeBackend
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    seen = []

    class BatchedFake(FakeBackend):
        def score(self, prompts, candidates, first_token=False):
            out = []
            for i in range(0, len(prompts), 8):
                out += super().score(prompts[i:i + 8], candidates[i:i + 8], first_token)
                terminal.prompts_done(len(prompts[i:i + 8]))
                seen.append(labeler.bar.n)
            return out

    labeler = Labeler(BatchedFake(), LabelTask(labels=["negative", "positive"]), progress=True, chunk_size=20,
                      calibration="none")
    assert len(labeler.label_texts([f"row {i}" for i in range(30)])) == 30
    assert seen == [8, 16, 20, 28, 30]  # within the 20-row chunk, then the 10-row one; never past a chunk's rows
