"""A table of hostile inputs walked through the CLI: data files, label files, recipes, flags and paths.

Each ends in exit 0 (the input is odd but usable: labeled, rows kept with a status) or exit 2 with exactly one
`error:` line; never a traceback, never exit 1. `CASES` is counted in the README's Reliability section.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from clihelpers import cli, one_error_line

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(60)]

LABELS = ["--labels", "negative,positive"]
FAKE = ["--backend", "fake", "-q"]


def _files(root: Path) -> None:
    """Every file the table refers to, under `root` (names are the `{...}` placeholders of CASES)."""
    def write(name: str, content: str | bytes) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))

    good = '{"text": "a positive film", "label": "positive"}\n{"text": "so negative", "label": "negative"}\n'
    write("good.jsonl", good)
    write("empty.jsonl", "")
    write("bad_line.jsonl", '{"text": "ok"}\n{"text": \n')
    write("list_line.jsonl", '[1, 2]\n')
    write("numbers.json", "[1, 2, 3]")
    write("broken.json", '{"data": [')
    write("scalar.json", "5")
    write("data_not_list.json", '{"data": 5}')
    write("ragged.csv", "text,label\ngood, fun film,positive\n")
    write("short.csv", "text,label\nfine,negative\nshort\n")
    write("header_only.csv", "text,label\n")
    write("huge_field.csv", "text,label\n" + "x" * 1_000_000 + ",positive\n")
    write("garbage.parquet", b"PAR1 this is not parquet at all")
    (root / "no_files").mkdir(exist_ok=True)
    write("notes.txt", "hello")
    write("bad_utf8.jsonl", b'{"text": "caf\xe9 \xff", "label": "positive"}\n')
    write("gzipped.jsonl", gzip.compress(good.encode()))
    write("some_gold.jsonl", '{"text": "good", "label": "positive"}\n{"text": "no gold"}\n')
    write("bad_gold.jsonl", '{"text": "good", "label": "posittive"}\n')
    write("no_text.jsonl", '{"txt": "good"}\n')
    write("odd_texts.jsonl", '{"text": 12345}\n{"text": [1, 2]}\n{"text": {"k": "v"}}\n{"text": null}\n'
                             '{"text": "\\u0000\\ud800"}\n')
    write("labels_bad/data.jsonl", '{"text": "a"}\n')
    write("labels_bad/labels.json", "negative, positive")
    write("labels_dup/data.jsonl", '{"text": "a"}\n')
    write("labels_dup/labels.json", '["a", "a"]')
    write("labels_empty/data.jsonl", '{"text": "a"}\n')
    write("labels_empty/labels.json", "[]")
    write("labels_dir/data.jsonl", '{"text": "a"}\n')
    (root / "labels_dir" / "labels.json").mkdir(exist_ok=True)
    for name in ("loop.jsonl", "loop_out"):
        if not (root / name).is_symlink():
            os.symlink(root / name, root / name)  # a symlink to itself: ELOOP on every use
    write("a_file", "x")

    def recipe(name: str, body: str | bytes) -> None:
        write(name, body)

    base = {"model": {"backend": "fake"}, "data": {"path": str(root / "good.jsonl")},
            "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(root / "out")}}
    recipe("ok.yaml", json.dumps(base))
    recipe("bad_utf8.yaml", b"name: caf\xe9\n")
    (root / "folder.yaml").mkdir(exist_ok=True)
    recipe("invalid.yaml", "data: {path: [unclosed\n")
    recipe("list.yaml", "- a\n- b\n")
    layers = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        layers.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    recipe("bomb.yaml", "\n".join(layers) + "\n")
    recipe("unknown_key.yaml", json.dumps({**base, "labelling": {}}))
    recipe("unknown_kind.yaml", json.dumps({**base, "kind": "labell"}))
    recipe("empty.yaml", "")
    recipe("api_key.yaml", json.dumps({**base, "model": {"backend": "openai", "options": {"api_key": "sk-x"}}}))
    recipe("bad_model.yaml", json.dumps({**base, "model": {"name": "smolm2"}}))
    recipe("bad_suffix.yaml", json.dumps({**base, "output": {"dir": str(root / "out"),
                                                             "predictions": "preds.txt"}}))
    recipe("negative_limit.yaml", json.dumps({**base, "data": {"path": str(root / "good.jsonl"), "limit": -1}}))
    recipe("tabs.yaml", "data:\n\tpath: x\n")
    recipe("nul_out.yaml", json.dumps({**base, "output": {"dir": "o\x00x"}}))
    recipe("nul_data.yaml", json.dumps({**base, "data": {"path": "d\x00.jsonl"}}))
    write("preds_no_gold.jsonl", '{"text": "a", "label": "positive", "confidence": 0.9}\n')
    write("preds_bad_conf.jsonl", '{"gold_label": "positive", "label": "positive", "confidence": "high"}\n')
    write("preds_ok.jsonl", '{"gold_label": "positive", "label": "positive", "confidence": 0.9}\n'
                            '{"gold_label": "negative", "label": "positive", "confidence": 0.6}\n')


BOMB = "[" + ", ".join(["&l0 [x, x, x, x, x, x, x, x, x, x]"]
                       + [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]) + "]"

#: (case id, argv with {root} placeholders, expected exit code)
CASES = [
    # data files
    ("data missing", ["label", "{root}/missing.jsonl", *LABELS, *FAKE], 2),
    ("data empty", ["label", "{root}/empty.jsonl", *LABELS, *FAKE], 2),
    ("jsonl line not JSON", ["label", "{root}/bad_line.jsonl", *LABELS, *FAKE], 2),
    ("jsonl line a list", ["label", "{root}/list_line.jsonl", *LABELS, *FAKE], 2),
    ("json of numbers", ["label", "{root}/numbers.json", *LABELS, *FAKE], 2),
    ("json cut", ["label", "{root}/broken.json", *LABELS, *FAKE], 2),
    ("json scalar", ["label", "{root}/scalar.json", *LABELS, *FAKE], 2),
    ("json data not a list", ["label", "{root}/data_not_list.json", *LABELS, *FAKE], 2),
    ("csv surplus field", ["label", "{root}/ragged.csv", *LABELS, *FAKE], 2),
    ("csv missing field", ["label", "{root}/short.csv", *LABELS, *FAKE], 2),
    ("csv header only", ["label", "{root}/header_only.csv", *LABELS, *FAKE], 2),
    ("csv 1 MB field", ["label", "{root}/huge_field.csv", *LABELS, *FAKE], 0),
    ("parquet garbage", ["label", "{root}/garbage.parquet", *LABELS, *FAKE], 2),
    ("data folder without files", ["label", "{root}/no_files", *LABELS, *FAKE], 2),
    ("data .txt", ["label", "{root}/notes.txt", *LABELS, *FAKE], 2),
    ("data invalid UTF-8", ["label", "{root}/bad_utf8.jsonl", *LABELS, *FAKE], 0),
    ("data gzip bytes", ["label", "{root}/gzipped.jsonl", *LABELS, *FAKE], 2),
    ("some rows without gold", ["label", "{root}/some_gold.jsonl", *LABELS, *FAKE], 0),
    ("gold outside the labels", ["label", "{root}/bad_gold.jsonl", *LABELS, *FAKE], 2),
    ("text column missing", ["label", "{root}/no_text.jsonl", *LABELS, *FAKE], 2),
    ("texts not strings, NUL, surrogate", ["label", "{root}/odd_texts.jsonl", *LABELS, *FAKE], 0),
    ("data /dev/null", ["label", "/dev/null", *LABELS, *FAKE], 2),
    ("data symlink loop", ["label", "{root}/loop.jsonl", *LABELS, *FAKE], 2),
    ("data name too long", ["label", "x" * 5000 + ".jsonl", *LABELS, *FAKE], 2),
    ("data a Hub name, Hub unreachable", ["label", "no-such-dataset-xyz", *LABELS, *FAKE], 2),
    # label files
    ("labels.json not JSON", ["label", "{root}/labels_bad/data.jsonl", *FAKE], 2),
    ("labels.json duplicates", ["label", "{root}/labels_dup/data.jsonl", *FAKE], 2),
    ("labels.json empty list", ["label", "{root}/labels_empty/data.jsonl", *FAKE], 2),
    ("labels.json a folder", ["label", "{root}/labels_dir/data.jsonl", *FAKE], 2),
    # recipes
    ("recipe invalid UTF-8", ["run", "{root}/bad_utf8.yaml"], 2),
    ("recipe a folder", ["run", "{root}/folder.yaml"], 2),
    ("recipe invalid YAML", ["run", "{root}/invalid.yaml"], 2),
    ("recipe a list", ["run", "{root}/list.yaml"], 2),
    ("recipe alias bomb", ["run", "{root}/bomb.yaml"], 2),
    ("recipe unknown key", ["run", "{root}/unknown_key.yaml"], 2),
    ("recipe unknown kind", ["run", "{root}/unknown_kind.yaml"], 2),
    ("recipe empty", ["run", "{root}/empty.yaml"], 2),
    ("recipe api_key", ["run", "{root}/api_key.yaml"], 2),
    ("recipe unknown model", ["run", "{root}/bad_model.yaml"], 2),
    ("recipe predictions .txt", ["run", "{root}/bad_suffix.yaml"], 2),
    ("recipe limit -1", ["run", "{root}/negative_limit.yaml"], 2),
    ("recipe tab indentation", ["run", "{root}/tabs.yaml"], 2),
    ("recipe missing", ["run", "{root}/nope.yaml"], 2),
    ("recipe output.dir with NUL", ["run", "{root}/nul_out.yaml"], 2),
    ("recipe data.path with NUL", ["run", "{root}/nul_data.yaml"], 2),
    ("--set alias bomb", ["run", "{root}/ok.yaml", "--set", f"labeling.examples={BOMB}"], 2),
    ("--set output.dir=/dev/full", ["run", "{root}/ok.yaml", "--set", "output.dir=/dev/full"], 2),
    ("--set without =", ["run", "{root}/ok.yaml", "--set", "data.limit"], 2),
    ("--set into a value", ["run", "{root}/ok.yaml", "--set", "data.path.x=1"], 2),
    ("--set unknown key", ["run", "{root}/ok.yaml", "--set", "data.lmit=3"], 2),
    ("--set executor typo", ["run", "{root}/ok.yaml", "--executor", "rya"], 2),
    ("recipe fine", ["run", "{root}/ok.yaml", "-q"], 0),
    # flags
    ("unknown flag", ["label", "{root}/good.jsonl", "--bogus"], 2),
    ("run without recipe", ["run"], 2),
    ("unknown command", ["foo"], 2),
    ("--limit abc", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--limit", "abc"], 2),
    ("--limit 0", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--limit", "0"], 2),
    ("--quiet true", ["label", "{root}/good.jsonl", *LABELS, "--quiet", "true"], 2),
    ("--labels duplicates", ["label", "{root}/good.jsonl", "--labels", "neg,neg", *FAKE], 2),
    ("--labels empty", ["label", "{root}/good.jsonl", "--labels", "", *FAKE], 2),
    ("--labels blank", ["label", "{root}/good.jsonl", "--labels", "   ", *FAKE], 2),
    ("--labels empty entry", ["label", "{root}/good.jsonl", "--labels", "billing,,technical", *FAKE], 2),
    ("--model typo", ["label", "{root}/good.jsonl", *LABELS, "--model", "smolm2"], 2),
    ("--model missing path", ["label", "{root}/good.jsonl", *LABELS, "--model", "./no/such/model"], 2),
    ("--backend typo", ["label", "{root}/good.jsonl", *LABELS, "--backend", "fkae"], 2),
    ("--option without =", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--option", "delay"], 2),
    ("--option unknown", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--option", "dleay=1"], 2),
    ("--option api_key", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--option", "api_key=sk-1"], 2),
    ("--mode typo", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--mode", "scroe"], 2),
    ("--calibration typo", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--calibration", "batc"], 2),
    ("--normalize typo", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--normalize", "avg"], 2),
    ("--text-field missing", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "--text-field", "body"], 2),
    ("--split of a file", ["label", "{root}/no_files", *LABELS, *FAKE, "--split", "train"], 2),
    # paths
    ("-o an existing file", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "-o", "{root}/a_file"], 2),
    ("-o /dev/full", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "-o", "/dev/full"], 2),
    ("-o under a file", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "-o", "{root}/a_file/sub"], 2),
    ("-o a symlink loop", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "-o", "{root}/loop_out"], 2),
    ("-o name too long", ["label", "{root}/good.jsonl", *LABELS, *FAKE, "-o", "y" * 5000], 2),
    ("eval missing file", ["eval", "{root}/nope.jsonl"], 2),
    ("eval without gold", ["eval", "{root}/preds_no_gold.jsonl"], 2),
    ("eval confidence not a number", ["eval", "{root}/preds_bad_conf.jsonl"], 2),
    ("eval --labels missing a gold label", ["eval", "{root}/preds_ok.jsonl", "--labels", "positive"], 2),
    ("eval --labels empty entry", ["eval", "{root}/preds_ok.jsonl", "--labels", "positive,"], 2),
    ("eval a folder", ["eval", "{root}/no_files"], 2),
    ("eval -o a device", ["eval", "{root}/preds_ok.jsonl", "-o", "/dev/full/report.json"], 2),
    ("eval fine", ["eval", "{root}/preds_ok.jsonl"], 0),
    ("recipes show unknown", ["recipes", "show", "nope"], 2),
    ("recipes show a folder", ["recipes", "show", "{root}/folder.yaml"], 2),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile_cli")
    _files(path)
    return path


def test_the_table_is_big_enough_and_the_readme_counts_it():
    from helpers import REPO

    assert len(CASES) >= 40 and len({case for case, _, _ in CASES}) == len(CASES)
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"walks {len(CASES)} hostile inputs (files, recipes, flags, paths) through the CLI" in readme


@pytest.fixture(scope="module")
def unreachable_hub() -> str:
    """An HF_ENDPOINT nothing listens on: every case sees the Hub as unreachable, as CI (no internet) does."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("argv, expected", [(a, e) for _, a, e in CASES], ids=[c for c, _, _ in CASES])
def test_hostile_input_ends_in_exit_0_or_one_line_and_exit_2(root, unreachable_hub, capsys, monkeypatch, argv,
                                                            expected):
    monkeypatch.chdir(root)
    monkeypatch.setenv("HF_ENDPOINT", unreachable_hub)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    argv = [a.replace("{root}", str(root)) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert "Traceback" not in out + err
    assert code == expected, (code, out, err)
    if code == 2:
        line = one_error_line(err)
        assert len(line) < 600  # one readable line, not a dump
