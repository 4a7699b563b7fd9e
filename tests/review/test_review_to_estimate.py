"""The review loop feeds the estimate kind: a random audit sample exported by `review export`, answered by a
reviewer who is always right, imported by `review import`, then read by `llmlabel estimate` as its gold sample.
Checks the `reviews.jsonl` contract between the two families end to end, through the CLI."""

from __future__ import annotations

import json

from helpers import run_cli as _cli, write_jsonl
from reviewhelpers import answer_like_gold, make_run





def test_random_audit_answers_are_the_estimates_gold_sample(tmp_path, capsys):
    rows = [{"text": f"review number {i} " + ("great" if i % 3 else "awful"),
             "label": "positive" if i % 3 else "negative"} for i in range(120)]
    run = make_run(tmp_path / "run", write_jsonl(tmp_path / "d.jsonl", rows), limit=120,
                   labels=["negative", "positive"])

    code, out, err = _cli(capsys, "review", "export", str(run), "--budget", "40", "--select", "random",
                          "--format", "jsonl", "-o", str(tmp_path / "export"))
    assert code == 0, err
    exported = [json.loads(line) for line in next((tmp_path / "export").rglob("review.jsonl")).read_text().splitlines()]
    assert len(exported) == 40 and {r["selected_by"] for r in exported} == {"random"}
    answers = write_jsonl(tmp_path / "answers.jsonl", answer_like_gold(exported, run))
    code, out, err = _cli(capsys, "review", "import", str(answers), "--run", str(run))
    assert code == 0, err

    code, out, err = _cli(capsys, "estimate", str(run / "predictions.jsonl"), "-o", str(tmp_path / "est"))
    assert code == 0, err
    estimates = [json.loads(line) for line in (tmp_path / "est" / "estimates.jsonl").read_text().splitlines()]
    classical = next(e for e in estimates if e["target"] == "share[positive]" and e["method"] == "classical")
    # the classical estimate is the reviewed rows' own share of 'positive' (gold: every third row negative)
    reviewed = [r["row"] for r in exported]
    truth = sum(rows[i]["label"] == "positive" for i in reviewed) / len(reviewed)
    assert abs(classical["estimate"] - truth) < 1e-5  # estimates.jsonl rounds to 6 decimals
