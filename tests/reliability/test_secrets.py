"""Secrets and config safety: the API key comes only from the environment or a key file and never lands in the
cache, logs, outputs, printed recipes or error messages, even from a server that echoes it back; recipes are
loaded safely and cannot run code."""

from __future__ import annotations

import json
import logging
import secrets
import time
from pathlib import Path

import pytest
import yaml

from helpers import run_cli as _cli, write_jsonl
from llmlabel.config import load_recipe
from llmlabel.errors import ConfigError
from llmlabel.testing.fault_server import serve_faults
from relhelpers import openai_recipe, sentiment_rows

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]

KEY = f"sk-planted-{secrets.token_hex(16)}"


def _fragments(key: str) -> list[bytes]:
    """The key and every 12-character piece of it: a leak of half a key is a leak."""
    return [key.encode()] + [key[i:i + 12].encode() for i in range(0, len(key) - 12)]


def _leaks(blob: bytes) -> list[bytes]:
    return [f for f in _fragments(KEY) if f in blob]




@pytest.mark.parametrize("source", ["env", "custom-env", "key-file"])
def test_a_planted_key_reaches_no_artifact(source, tokenizer_dir, tmp_path_factory, monkeypatch, capsys, caplog):
    """Score and generate runs (and a resumed run) against a server that demands the key and echoes the
    Authorization header into its error messages and answers; then every file, every printed line and every log
    record (httpx and httpcore at DEBUG included) is searched for the key and for any 12-character piece of it."""
    work = tmp_path_factory.mktemp("work")
    options: dict = {}
    if source == "env":
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
    elif source == "custom-env":
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv("MY_LLM_KEY", KEY)
        options["api_key_env"] = "MY_LLM_KEY"
    else:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        key_file = tmp_path_factory.mktemp("secret") / "key.txt"  # outside the searched folder
        key_file.write_text(f"\n  {KEY}  \n")
        options["api_key_file"] = str(key_file)
    caplog.set_level(logging.DEBUG)
    data = write_jsonl(work / "rows.jsonl", sentiment_rows(40))
    plan = {"require_key": KEY, "reflect_auth": True, "outage": 0.2, "rates": {"500": 0.15},
            "obey_choices": False, "answers": ["positive", "negative", "no idea"], "seed": 2}
    printed = []
    with serve_faults(plan) as server:
        for mode in ("score", "generate"):
            recipe = openai_recipe(work / mode, data, server.url, tokenizer_dir, max_retries=2, **options)
            recipe["labeling"]["mode"] = mode
            path = work / f"{mode}.yaml"
            path.write_text(yaml.safe_dump(recipe))
            for _ in range(2):  # the second run resumes from the cache and retries the failed rows
                code, out, err = _cli(capsys, "run", str(path))
                assert code == 0, err
                printed.append(out + err)
            code, out, err = _cli(capsys, "recipes", "show", str(path))
            printed.append(out + err)
        stats = server.stats()["stats"]
    assert stats["authorized"] > 0 and stats.get("unauthorized", 0) == 0  # the key was really sent
    # The echoed header really came back, and was redacted: this test can fail.
    predictions = [json.loads(line) for mode in ("score", "generate")
                   for line in (work / mode / "predictions.jsonl").read_text().splitlines()]
    echoed = [p.get("reason") or p.get("raw_answer") or "" for p in predictions]
    assert any("Authorization: Bearer ***" in text for text in echoed)
    assert any(p["status"] == "failed" for p in predictions)

    files = [p for p in work.rglob("*") if p.is_file()]
    assert {"predictions.jsonl", "report.json", "cache.sqlite"} <= {p.name for p in files}
    for file in files:  # outputs, reports, recipes, the cache and its -wal/-shm files, byte for byte
        assert not _leaks(file.read_bytes()), f"the key leaked into {file}"
    assert not _leaks("\n".join(printed).encode()), "the key leaked into the CLI's output"
    assert any(r.name.startswith(("httpx", "httpcore")) for r in caplog.records)  # debug logs were on
    assert not _leaks(caplog.text.encode()), "the key leaked into the logs"


def test_a_cut_error_message_keeps_no_piece_of_the_key(tokenizer_dir, monkeypatch):
    """A server echoing the key where the one-line message is cut: redaction runs before the cut."""
    import httpx

    from llmlabel.backends.openai import OpenAIBackend, RequestFailed

    for pad in range(270, 310, 3):
        message = "x" * pad + f" Bearer {KEY} and more text after it"

        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(500, json={"error": {"message": message}})

        backend = OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", api_key_file=None, max_retries=0)
        backend._api_key = KEY
        monkeypatch.setattr(backend, "_client", lambda connections=None: httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url=backend.base_url))
        with pytest.raises(RequestFailed) as info:
            backend.generate(["hi"])
        assert not _leaks(str(info.value).encode()), str(info.value)


def test_a_rejected_key_stops_the_run_with_one_line_and_no_key(tokenizer_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    data = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(5))
    with serve_faults({"require_key": "another-key", "reflect_auth": True}) as server:
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(openai_recipe(tmp_path / "out", data, server.url, tokenizer_dir)))
        code, out, err = _cli(capsys, "run", str(path), "-q")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "HTTP 401" in err and "check the API key" in err and "Bearer ***" in err
    assert not _leaks((out + err).encode())


@pytest.mark.parametrize("how", ["recipe", "set", "option"])
def test_recipes_and_flags_refuse_api_keys(how, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", sentiment_rows(3))
    path = tmp_path / "r.yaml"
    recipe = {"model": {"backend": "openai", "options": {}}, "data": {"path": str(data)},
              "task": {"labels": ["negative", "positive"]}, "output": {"dir": str(tmp_path / "out")}}
    if how == "recipe":
        recipe["model"]["options"]["api_key"] = KEY
    path.write_text(yaml.safe_dump(recipe))
    argv = {"recipe": ["run", str(path)], "set": ["run", str(path), "--set", f"model.options.api_key={KEY}"],
            "option": ["label", str(data), "--backend", "openai", "--option", f"api_key={KEY}"]}[how]
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1
    assert "'api_key' is not accepted in recipes or flags" in err and "OPENAI_API_KEY" in err
    assert "api_key_file" in err and not _leaks((out + err).encode())


def test_key_sources_and_their_errors(tokenizer_dir, tmp_path, monkeypatch):
    from llmlabel.backends.openai import OpenAIBackend

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    a = OpenAIBackend(tokenizer=tokenizer_dir, served_model="m")
    monkeypatch.setenv("OPENAI_API_KEY", KEY[::-1])
    b = OpenAIBackend(tokenizer=tokenizer_dir, served_model="m")
    monkeypatch.delenv("OPENAI_API_KEY")
    c = OpenAIBackend(tokenizer=tokenizer_dir, served_model="m")
    assert a._api_key == KEY and b._api_key == KEY[::-1] and c._api_key is None
    # The key is no part of what identifies results: same model id (so same cache keys), nothing in repr.
    assert a.model_id == b.model_id == c.model_id
    assert not _leaks(repr(a).encode()) and "api_key=set" in repr(a) and "api_key=unset" in repr(c)

    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=f"^api_key_file {missing} not found$"):
        OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", api_key_file=str(missing))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ConfigError, match=f"^api_key_file {empty} is empty$"):
        OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", api_key_file=str(empty))
    spaced = tmp_path / "spaced.txt"
    spaced.write_text(f"{KEY[:10]} {KEY[10:]}\n")
    with pytest.raises(ConfigError) as info:
        OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", api_key_file=str(spaced))
    assert str(info.value) == (f"the API key from api_key_file {spaced} has spaces or characters that cannot go "
                               "in an HTTP header") and KEY[10:20] not in str(info.value)
    with pytest.raises(ConfigError, match="^api_key_env must name an environment variable, got 'not a name'$"):
        OpenAIBackend(tokenizer=tokenizer_dir, served_model="m", api_key_env="not a name")


def test_credentials_in_base_url_are_refused_without_being_shown(tokenizer_dir):
    from llmlabel.backends.openai import OpenAIBackend

    for url in (f"http://user:{KEY}@127.0.0.1:8000/v1", f"https://{KEY}@api.example.com/v1"):
        with pytest.raises(ConfigError) as info:
            OpenAIBackend(base_url=url, tokenizer=tokenizer_dir, served_model="m")
        assert str(info.value).startswith("base_url must not contain credentials") and not _leaks(
            str(info.value).encode())
    with pytest.raises(ConfigError, match="without a query string"):
        OpenAIBackend(base_url=f"http://127.0.0.1:8000/v1?api-key={KEY}", tokenizer=tokenizer_dir, served_model="m")


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:llmlabel.config.Recipe {{}}",
])
def test_recipes_cannot_run_code(tag, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"name: x\ndata:\n  path: {tag.format(marker=marker)}\n")
    with pytest.raises(ConfigError, match=r"evil\.yaml: invalid YAML at line 3: could not determine a constructor "
                                          r"for the tag 'tag:yaml\.org,2002:python/"):
        load_recipe(evil)
    assert not marker.exists()


def test_an_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nlabeling: {examples: [{text: *i, label: x}]}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_recipe(bomb)
    assert time.perf_counter() - start < 5


def test_every_shipped_recipe_is_free_of_secrets_and_python_tags():
    from helpers import REPO

    for path in sorted((REPO / "recipes").glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert "!!python" not in text and "api_key:" not in text
        load_recipe(Path(path))
