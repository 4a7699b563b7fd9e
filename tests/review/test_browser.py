"""The review page and the HTML report in a real headless Chromium (Debian's `chromium`, driven by playwright).

A person answers 20 rows with the keyboard (accept, pick by digit, filter + Enter, skip, undo); the server is killed
with SIGKILL halfway and restarted; reviews.jsonl must hold exactly the answers given. The report must render every
plot. Screenshots go to $LLMLABEL_SCREENSHOT_DIR when set (the README's come from benchmarks/review_roundtrip.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from reviewhelpers import wait_for_ci_dependency
from helpers import read_jsonl

from llmlabel.review.run import ReviewLog

pytestmark = pytest.mark.slow  # a real browser: ~30 s, so outside the fast tier


@pytest.fixture(scope="module")
def browser_ready() -> None:
    wait_for_ci_dependency("chromium")
    pytest.importorskip("playwright")
    from llmlabel.testing.review import CHROMIUM

    if not Path(CHROMIUM).exists():
        if os.environ.get("LLMLABEL_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} not found (apt-get install -y chromium)")
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")


def _keep(path: Path, name: str) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    if os.environ.get("LLMLABEL_SCREENSHOT_DIR"):
        shutil.copy(path, Path(os.environ["LLMLABEL_SCREENSHOT_DIR"]) / name)


def test_review_page_keyboard_20_answers_survive_a_killed_server(browser_ready, sst2_run, tmp_path):
    from llmlabel.testing.review import ReviewServerProcess, answer_rows, chromium

    gold = {i: r["gold_label"] for i, r in enumerate(read_jsonl(sst2_run / "predictions.jsonl"))}
    args = ("--budget", "30", "--select", "mixed", "--embedder", "hashing", "--reviewer", "browser-test")
    server = ReviewServerProcess(sst2_run, *args)
    given: list[tuple[int, str, str]] = []
    try:
        with chromium() as page:
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            assert page.inner_text("#progress") == "0 / 30"
            given += answer_rows(page, 6, gold.__getitem__)
            # Skip one row (s), then answer the next; undo (u) returns to it, which is answered again.
            skipped = int(page.inner_text("#row"))
            page.keyboard.press("s")
            page.wait_for_function(f"document.getElementById('row').textContent !== '{skipped}'")
            given += answer_rows(page, 1, gold.__getitem__)
            page.keyboard.press("u")
            page.wait_for_function("parseInt(document.getElementById('progress').textContent) === 6")
            undone = given.pop()
            assert int(page.inner_text("#row")) == undone[0]
            # The filter: '/' + part of a label + Enter picks the first match, whatever the LLM said.
            wrong = "negative" if gold[undone[0]] == "positive" else "positive"
            page.keyboard.press("/")
            page.keyboard.type(wrong[:3])
            page.keyboard.press("Enter")
            page.wait_for_function("parseInt(document.getElementById('progress').textContent) === 7")
            given.append((undone[0], wrong, "/" + wrong[:3]))
            given += answer_rows(page, 3, gold.__getitem__)
            assert page.inner_text("#progress") == "10 / 30"
        assert len(ReviewLog(sst2_run / "reviews.jsonl").latest()) == 10
    finally:
        server.kill()  # SIGKILL mid-review: only what reached reviews.jsonl counts
    server = ReviewServerProcess(sst2_run, *args)
    try:
        with chromium() as page:
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            assert page.inner_text("#progress") == "10 / 30"  # resumed from reviews.jsonl
            first = int(page.inner_text("#row"))
            assert first not in {row for row, _, _ in given}  # it opens on an unanswered row
            given += answer_rows(page, 10, gold.__getitem__)
            assert page.inner_text("#progress") == "20 / 30"
            page.screenshot(path=str(tmp_path / "review_page.png"))
            _keep(tmp_path / "review_page.png", "review_page.png")
    finally:
        server.kill()
    latest = ReviewLog(sst2_run / "reviews.jsonl").latest()
    assert {row: rec["label"] for row, rec in latest.items()} == {row: label for row, label, _ in given}
    assert len(latest) == 20
    records = read_jsonl(sst2_run / "reviews.jsonl")
    assert len(records) == 22  # 20 answers + the undone answer + its undo (label null)
    assert sum(r["label"] is None for r in records) == 1
    assert {r["source"] for r in records} == {"serve"} and {r["reviewer"] for r in records} == {"browser-test"}
    assert any(key == "Enter" for _, _, key in given) and any(key.isdigit() for _, _, key in given)


def test_html_report_renders_every_plot(browser_ready, sst2_run, tmp_path):
    from llmlabel.testing.review import chromium
    from llmlabel.review.report_html import write_report

    report = write_report(sst2_run)
    with chromium(width=1200, height=900) as page:
        page.goto(report.as_uri())
        sizes = page.eval_on_selector_all(
            "img.plot", "imgs => imgs.map(i => [i.id, i.complete, i.naturalWidth, i.naturalHeight])")
        assert [s[0] for s in sizes] == ["plot-confusion", "plot-reliability", "plot-confidence"]
        assert all(complete and width > 100 and height > 100 for _, complete, width, height in sizes), sizes
        assert page.inner_text("h1").startswith("llmlabel run report")
        assert "most uncertain rows" in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        _keep(tmp_path / "report.png", "report_html.png")
