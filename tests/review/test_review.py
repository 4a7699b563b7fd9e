"""The review loop without a browser: choosing rows, every format's round trip, validation, agreement, gold files,
the page's JSON API and the HTML report."""

from __future__ import annotations

import csv
import http.client
import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from reviewhelpers import answer_like_gold, make_run
from helpers import read_jsonl, run_cli as _cli, write_jsonl

from llmlabel.errors import ConfigError, DataError
from llmlabel.review.agreement import agreement, wilson_interval
from llmlabel.review.base import export_review, import_review
from llmlabel.review.run import RECORD_KEYS, ReviewLog, Run, margin
from llmlabel.review.select import select_rows




def _true_accuracy(run_dir: Path, rows: list[int]) -> float:
    preds = read_jsonl(run_dir / "predictions.jsonl")
    return sum(preds[i]["label"] == preds[i]["gold_label"] for i in rows) / len(rows)


# -- choosing rows -------------------------------------------------------------------------------------------------
def test_random_is_a_uniform_sample_with_its_probability(sst2_run):
    run = Run.load(sst2_run)
    picks = select_rows(run, "random", 15, seed=3)
    assert len({p.row for p in picks}) == 15 and all(p.selected_by == "random" for p in picks)
    assert all(p.sampling_prob == pytest.approx(15 / 60) for p in picks)
    assert [p.row for p in picks] == [p.row for p in select_rows(run, "random", 15, seed=3)]
    assert [p.row for p in picks] != [p.row for p in select_rows(run, "random", 15, seed=4)]
    # Over many seeds every row is drawn about equally often (uniform: 1000 draws of 15/60 -> 250 each).
    counts = [0] * 60
    for seed in range(1000):
        for p in select_rows(run, "random", 15, seed=seed):
            counts[p.row] += 1
    assert 190 < min(counts) and max(counts) < 310


def test_uncertain_takes_the_smallest_margins_or_highest_entropy(sst2_run):
    run = Run.load(sst2_run)
    picks = select_rows(run, "uncertain", 10)
    margins = sorted(margin(run.probs(i)) for i in range(60))
    assert [margin(run.probs(p.row)) for p in picks] == margins[:10]
    assert all(p.sampling_prob == 1.0 and "margin" in p.why for p in picks)
    # With two labels, lowest margin and highest entropy pick the same rows.
    assert {p.row for p in select_rows(run, "uncertain", 10, by="entropy")} == {p.row for p in picks}


def test_disagree_picks_rows_where_runs_differ(sst2_run, tmp_path, shared_data):
    other = make_run(tmp_path / "other", shared_data / "sst2" / "validation.jsonl", 60, ["negative", "positive"],
                     model="b", instruction="Is this movie review negative or positive?")
    run, second = Run.load(sst2_run), Run.load(other)
    differ = {i for i in range(60) if run.llm_label(i) != second.llm_label(i)}
    assert differ, "the two fake models should disagree somewhere"
    picks = select_rows(run, "disagree", 60, others=[second])
    assert {p.row for p in picks} == differ
    with pytest.raises(ConfigError, match="needs at least one other run"):
        select_rows(run, "disagree", 5)


def test_mixed_spends_an_audit_share_then_one_row_per_cluster(sst2_run):
    run = Run.load(sst2_run)
    picks = select_rows(run, "mixed", 20, embedder="hashing")
    audit = [p for p in picks if p.selected_by == "random"]
    rest = [p for p in picks if p.selected_by == "mixed"]
    assert len(audit) == 5 and len(rest) == 15 and len({p.row for p in picks}) == 20
    assert all(p.sampling_prob == pytest.approx(5 / 60) for p in audit)
    assert len({p.why.split("cluster ")[1].split(" ")[0] for p in rest}) == 15  # 15 distinct clusters
    assert [p.row for p in audit] == [p.row for p in select_rows(run, "random", 5)]  # the same uniform draw


@pytest.mark.parametrize("args, message", [
    (("random", 0), "--budget must be a positive number of rows, got 0"),
    (("randum", 5), "unknown --select policy 'randum' (did you mean 'random'?); valid: disagree, mixed, random, "
                    "uncertain"),
])
def test_selection_errors_are_one_line(sst2_run, args, message):
    with pytest.raises(ConfigError) as info:
        select_rows(Run.load(sst2_run), *args)
    assert str(info.value) == message


# -- formats: export, a person answers, import ---------------------------------------------------------------------
def _answer_files(fmt: str, files: list[Path], run_dir: Path) -> Path:
    """Play the person in each tool: answer every exported row with its gold label, save the tool's export."""
    folder = files[0].parent
    if fmt == "jsonl":
        return write_jsonl(folder / "answers.jsonl", answer_like_gold(read_jsonl(files[0]), run_dir))
    if fmt == "csv":
        with open(files[0], encoding="utf-8", newline="") as handle:
            rows = answer_like_gold([{**r, "row": int(r["row"])} for r in csv.DictReader(handle)], run_dir)
        with open(folder / "answers.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return folder / "answers.csv"
    preds = read_jsonl(run_dir / "predictions.jsonl")
    if fmt == "label_studio":  # Label Studio's documented JSON export: tasks with their annotations
        tasks = json.loads(files[0].read_text())
        for number, task in enumerate(tasks):
            gold = preds[task["data"]["llmlabel_row"]]["gold_label"]
            task.update(id=number + 1, annotations=[{
                "id": number + 1, "completed_by": 1, "was_cancelled": False, "created_at": "2026-12-01T10:00:00Z",
                "updated_at": "2026-12-01T10:00:00Z", "lead_time": 2.5,
                "result": [{"id": "x", "from_name": "label", "to_name": "text", "type": "choices",
                            "value": {"choices": [gold]}}]}])
        path = folder / "label_studio_export.json"
        path.write_text(json.dumps(tasks))
        return path
    records = json.loads(files[2].read_text())  # argilla/records.json
    for record in records:
        gold = preds[record["metadata"]["row"]]["gold_label"]
        record["responses"] = {"label": [{"value": gold, "user_id": "7f0c", "status": "submitted"}]}
    path = files[2].parent.parent / "argilla_answers.json"
    path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "label_studio", "argilla"])
def test_round_trip_writes_the_contract_and_audit_agreement_is_true_accuracy(sst2_run, fmt, capsys):
    run = Run.load(sst2_run)
    picks = select_rows(run, "mixed", 24, embedder="hashing")
    files = export_review(run, picks, fmt, sst2_run / "review")
    answers = _answer_files(fmt, files, sst2_run)
    code, out, err = _cli(capsys, "review", "import", str(answers), "--run", str(sst2_run))
    assert code == 0, err
    records = read_jsonl(sst2_run / "reviews.jsonl")
    assert len(records) == 24 and all(list(r) == list(RECORD_KEYS) for r in records)
    assert {r["source"] for r in records} == {fmt}
    assert {r["row"]: r["selected_by"] for r in records} == {p.row: p.selected_by for p in picks}
    audit_rows = [p.row for p in picks if p.selected_by == "random"]
    report = json.loads((sst2_run / "review_agreement.json").read_text())
    assert report["audit"]["n"] == len(audit_rows) == 6
    assert report["audit"]["accuracy"] == pytest.approx(_true_accuracy(sst2_run, audit_rows))
    assert f"random audit sample: 6 rows, LLM agrees with reviewers on {report['audit']['agree']}" in out


def test_label_studio_config_and_tasks(sst2_run):
    run = Run.load(sst2_run)
    tasks_path, config_path, _ = export_review(run, select_rows(run, "uncertain", 5), "label_studio",
                                               sst2_run / "ls")
    root = ET.fromstring(config_path.read_text())
    assert [c.get("value") for c in root.iter("Choice")] == ["negative", "positive"]
    task = json.loads(tasks_path.read_text())[0]
    prediction = task["predictions"][0]
    assert prediction["result"][0]["value"]["choices"] == [task["data"]["llm_label"]]
    assert prediction["score"] == pytest.approx(task["data"]["confidence"], abs=1e-4)
    assert "fake:a" in prediction["model_version"] and "label.v1" in prediction["model_version"]
    assert {"selected_by", "sampling_prob", "why", "run", "model", "prompt", "label_probs"} <= set(task["data"])


def test_argilla_sdk_reads_the_exported_dataset(sst2_run):
    rg = pytest.importorskip("argilla")
    from unittest import mock

    run = Run.load(sst2_run)
    export_review(run, select_rows(run, "random", 5), "argilla", sst2_run / "review")
    folder = sst2_run / "review" / "argilla"
    # The SDK's field objects want a client even offline; a stand-in lets its own parsers read our files.
    with mock.patch.object(rg.Argilla, "_get_default", return_value=mock.MagicMock()):
        settings = rg.Settings.from_json(folder / ".argilla" / "settings.json")
        records = [rg.Record.from_dict(r) for r in json.loads((folder / "records.json").read_text())]
    assert settings.questions[0].name == "label" and settings.questions[0].labels == ["negative", "positive"]
    assert {m.name for m in settings.metadata} >= {"row", "selected_by", "sampling_prob"}
    assert records[0].suggestions["label"].value in ("negative", "positive")
    assert records[0].metadata["selected_by"] == "random"


def test_import_errors_are_one_line(sst2_run, capsys, tmp_path):
    run = Run.load(sst2_run)
    files = export_review(run, select_rows(run, "random", 4), "jsonl", sst2_run / "review")
    rows = answer_like_gold(read_jsonl(files[0]), sst2_run)
    first = rows[0]["row"]
    cases = [
        ([{**rows[0], "label": "postive"}], f"error: bad.jsonl row {first}: unknown label 'postive' (did you mean "
                                            f"'positive'?); valid: negative, positive"),
        ([rows[0], {**rows[0], "label": "negative" if rows[0]["label"] == "positive" else "positive",
                    "reviewer": "b"}],
         f"error: bad.jsonl row {first}: conflicting labels '{rows[0]['label']}' (sim) and "
         f"'{'negative' if rows[0]['label'] == 'positive' else 'positive'}' (b); resolve them in the tool, or pass "
         f"--latest to keep the latest answer"),
        ([{**rows[0], "text": "some other text"}],
         f"error: bad.jsonl row {first}: its text differs from the run's row {first}: answers from another run?"),
        ([{**rows[0], "row": 999, "text": None}],
         f"error: bad.jsonl row 999: no such row in {sst2_run / 'predictions.jsonl'} (60 rows): answers from "
         f"another run?"),
    ]
    for bad_rows, message in cases:
        bad = write_jsonl(tmp_path / "bad.jsonl", bad_rows)
        code, _, err = _cli(capsys, "review", "import", str(bad), "--run", str(sst2_run))
        assert (code, err.strip()) == (2, message)
    assert not (sst2_run / "reviews.jsonl").exists()  # nothing written by a rejected file
    code, _, err = _cli(capsys, "review", "export", str(tmp_path / "nope"))
    assert (code, err.strip()) == (2, f"error: run folder not found: {tmp_path / 'nope'} (give the output folder "
                                      f"of `llmlabel run`)")


def test_later_answers_supersede_and_null_undoes(tmp_path):
    log = ReviewLog(tmp_path / "reviews.jsonl")
    base = {"id": None, "llm_label": "a", "selected_by": "random", "sampling_prob": 0.1, "reviewer": "r",
            "time": "t", "source": "serve"}
    log.append([{**base, "row": 1, "label": "a"}, {**base, "row": 2, "label": "b"}])
    log.append([{**base, "row": 1, "label": "b"}, {**base, "row": 2, "label": None}])
    assert {r: rec["label"] for r, rec in log.latest().items()} == {1: "b"}
    assert len(log.records()) == 4
    with pytest.raises(ValueError, match="lacks sampling_prob"):
        log.append([{k: v for k, v in {**base, "row": 3, "label": "a"}.items() if k != "sampling_prob"}])


def test_wilson_interval():
    low, high = wilson_interval(80, 100)
    assert low == pytest.approx(0.7112, abs=1e-3) and high == pytest.approx(0.8666, abs=1e-3)
    assert wilson_interval(5, 10, population=10) == (0.5, 0.5)
    narrow = wilson_interval(40, 50, population=100)
    assert narrow[0] > wilson_interval(40, 50)[0] and narrow[1] < wilson_interval(40, 50)[1]


def test_gold_file_feeds_eval(sst2_run, capsys, tmp_path):
    run = Run.load(sst2_run)
    files = export_review(run, select_rows(run, "random", 20), "jsonl", sst2_run / "review")
    answers = write_jsonl(tmp_path / "a.jsonl", answer_like_gold(read_jsonl(files[0]), sst2_run))
    assert _cli(capsys, "review", "import", str(answers), "--run", str(sst2_run))[0] == 0
    gold = tmp_path / "gold.jsonl"
    code, out, _ = _cli(capsys, "review", "gold", str(sst2_run), "-o", str(gold))
    assert code == 0 and out.startswith("20 reviewed rows")
    rows = read_jsonl(gold)
    assert all(r["label"] == r["data_label"] for r in rows) and "gold_label" not in rows[0]
    code, out, _ = _cli(capsys, "eval", str(gold), "--gold-field", "label", "--pred-field", "llm_label",
                        "--labels", "negative,positive")
    expected = agreement(run)["audit"]["accuracy"]
    assert code == 0 and f"accuracy {expected:.4f}" in out


# -- the page's API (the browser test drives the page itself) -------------------------------------------------------
def test_review_api_answers_and_rejects_bad_requests(sst2_run):
    from llmlabel.review.server import make_server

    run = Run.load(sst2_run)
    picks = select_rows(run, "uncertain", 5)
    server = make_server(run, picks, reviewer="tester")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]

    def request(method: str, path: str, body: object = None, content_type: str = "application/json",
                raw: bytes | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers={"Content-Type": content_type} if data is not None else {})
        response = conn.getresponse()
        status, text = response.status, response.read()
        conn.close()
        return status, (json.loads(text) if text.startswith(b"{") else {"html": text.decode()})

    try:
        assert request("GET", "/")[0] == 200
        status, state = request("GET", "/api/state")
        assert status == 200 and [i["row"] for i in state["items"]] == [p.row for p in picks]
        row = picks[0].row
        assert request("POST", "/api/answer", {"row": row, "label": "positive"}) == (
            200, {"ok": True, "answered": 1, "total": 5})
        assert request("POST", "/api/answer", {"row": row, "label": "postive"}) == (
            400, {"error": "unknown label 'postive'"})
        assert request("POST", "/api/answer", {"row": 10_000, "label": "positive"})[0] == 404
        assert request("POST", "/api/answer", raw=b"{not json")[0] == 400
        assert request("POST", "/api/answer", {"row": row}) [0] == 400
        assert request("POST", "/api/answer", {"row": "1", "label": "positive"})[0] == 400
        assert request("POST", "/api/answer", {"row": row, "label": "negative"}, content_type="text/plain")[0] == 415
        assert request("POST", "/api/answer", raw=b"x" * 70_000)[0] == 413
        assert request("GET", "/nope")[0] == 404
        assert request("DELETE", "/api/answer")[0] == 405
        assert request("POST", "/api/answer", {"row": row, "label": None})[0] == 200  # undo
        assert request("GET", "/api/state")[1]["answers"] == {}
    finally:
        server.shutdown()
        server.server_close()
    records = read_jsonl(sst2_run / "reviews.jsonl")
    assert [r["label"] for r in records] == ["positive", None]
    assert records[0]["reviewer"] == "tester" and records[0]["source"] == "serve"


# -- the HTML report -------------------------------------------------------------------------------------------------
def test_run_writes_html_report_and_report_command_rebuilds_it(tmp_path, capsys, shared_data):
    data = shared_data / "sst2" / "validation.jsonl"
    code, out, err = _cli(capsys, "label", str(data), "--labels", "negative,positive", "--backend", "fake",
                          "--limit", "30", "-o", str(tmp_path / "r"), "-q", "--no-cache")
    assert code == 0, err
    html = (tmp_path / "r" / "report.html").read_text()
    assert f"html report: {tmp_path / 'r' / 'report.html'}" in out
    assert html.count('<img class="plot"') == 3 and "Reliability diagram" in html and "http" not in html
    (tmp_path / "r" / "report.html").unlink()
    code, out, _ = _cli(capsys, "report", str(tmp_path / "r"))
    assert code == 0 and (tmp_path / "r" / "report.html").exists()


def test_report_without_gold_uses_reviews_and_missing_matplotlib_is_a_note(tmp_path, shared_data, monkeypatch):
    import builtins

    from llmlabel.review.report_html import build_report, write_report_for_run

    rows = [{"text": r["text"]} for r in read_jsonl(shared_data / "sst2" / "validation.jsonl")[:20]]
    run_dir = make_run(tmp_path / "nogold", write_jsonl(tmp_path / "d.jsonl", rows), 20, ["negative", "positive"])
    html = build_report(Run.load(run_dir))
    assert "No gold labels and no reviews yet" in html and html.count('<img class="plot"') == 1
    run = Run.load(run_dir)
    picks = select_rows(run, "random", 10)
    files = export_review(run, picks, "jsonl", run_dir / "review")
    write_jsonl(tmp_path / "a.jsonl", [{**r, "label": "positive", "reviewer": "x"} for r in read_jsonl(files[0])])
    import_review(tmp_path / "a.jsonl", run)
    html = build_report(Run.load(run_dir))
    assert "against the reviewers&#x27; labels on the 10 reviewed rows" in html and html.count('<img class="plot"') == 3
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert write_report_for_run({"report": str(run_dir / "report.json")}) == (
        "html report: skipped (needs matplotlib: pip install matplotlib)")


def test_run_load_reads_label_set_of_old_reports(sst2_run):
    report = json.loads((sst2_run / "report.json").read_text())
    report.pop("task")
    (sst2_run / "report.json").write_text(json.dumps(report))
    assert Run.load(sst2_run).labels == ["negative", "positive"]
    with pytest.raises(DataError, match="unknown id column"):
        Run.load(sst2_run, id_field="uid")


def test_reviewed_rows_serve_as_exemplar_pool_and_calibration_dev_slice(sst2_run, tmp_path, capsys, shared_data):
    from llmlabel.backends.fake import FakeBackend
    from llmlabel.calibration.select import choose_calibration
    from llmlabel.config import load_recipe
    from llmlabel import run_recipe
    from llmlabel.review.use import reviewed_rows
    from llmlabel.core.task import LabelTask

    run = Run.load(sst2_run)
    files = export_review(run, select_rows(run, "random", 20), "jsonl", sst2_run / "review")
    import_review(write_jsonl(tmp_path / "a.jsonl", answer_like_gold(read_jsonl(files[0]), sst2_run)), run)
    gold_file = tmp_path / "reviewed.jsonl"
    assert _cli(capsys, "review", "gold", str(sst2_run), "-o", str(gold_file), "--only", "random")[0] == 0
    # The exemplar pool of an in-context recipe.
    summary = run_recipe(load_recipe(data={
        "name": "icl", "model": {"backend": "fake"},
        "data": {"path": str(shared_data / "sst2" / "test.jsonl"), "limit": 10},
        "task": {"labels": ["negative", "positive"]},
        "labeling": {"selection": {"method": "random", "k": 2, "pool": {"path": str(gold_file)}}},
        "output": {"dir": str(tmp_path / "icl"), "cache": None}}, source="test"), progress=False)
    assert summary["rows"] == 10
    # The dev slice of choose_calibration.
    rows = reviewed_rows(run, only="random")
    task = LabelTask(labels=["negative", "positive"])
    best, scores = choose_calibration(FakeBackend(), task, [r["text"] for r in rows], [r["label"] for r in rows])
    assert best in scores and len(scores) > 1


def test_review_api_write_failure_is_a_500_not_a_dropped_connection(sst2_run):
    from llmlabel.review.server import make_server

    run = Run.load(sst2_run)
    picks = select_rows(run, "uncertain", 3)
    server = make_server(run, picks, reviewer="tester")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (sst2_run / "reviews.jsonl").mkdir()  # the write cannot succeed
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("POST", "/api/answer", body=json.dumps({"row": picks[0].row, "label": "positive"}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 500
        assert json.loads(response.read())["error"].startswith("could not write reviews.jsonl")
    finally:
        server.shutdown()
        server.server_close()
