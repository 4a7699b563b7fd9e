"""Symbol tuning without a model: the prompt builder, the answer-only loss mask, the stress suite's settings (with a
backend that copies the label of the most similar exemplar), the summary, adapter checks and recipe errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from helpers import REPO
from llmlabel.backends.base import resolve_adapter
from llmlabel.config import DataConfig, load_recipe
from llmlabel.errors import ConfigError
from llmlabel.core.prompts import load_prompt
from llmlabel.training.icl_stress import StressConfig, StressTask, evaluate_task, summarize
from llmlabel.training.symbol_tuning import (EVAL_WORDS, TRAIN_WORDS, LabeledSource, SymbolTuningConfig,
                                             answer_loss, build_symbol_prompts, draw_symbols, tokenize_prompts)

BLOCK = re.compile(r"Input: (.*)\nOutput: (.*)")


def _source(n_labels: int = 6, per_label: int = 12) -> tuple[LabeledSource, dict[str, str]]:
    """A dataset whose texts are unique ("row 17"), with the label of each text kept aside."""
    names = [f"label_{i}" for i in range(n_labels)]
    texts, labels = [], []
    for i in range(n_labels * per_label):
        texts.append(f"row {i}")
        labels.append(names[i % n_labels])
    return LabeledSource("toy", texts, labels, names), dict(zip(texts, labels))


def _parse(prompt: str) -> tuple[list[tuple[str, str]], str]:
    """(exemplar text, shown label) blocks and the query text of a symbol-ICL prompt."""
    *blocks, last = prompt.split("\n\n")
    assert last.startswith("Input: ") and last.endswith("\nOutput:")
    return [BLOCK.fullmatch(b).groups() for b in blocks], last[len("Input: "):-len("\nOutput:")]


def _config(**overrides) -> SymbolTuningConfig:
    return SymbolTuningConfig(datasets=[DataConfig(path="toy.jsonl")], **overrides)


def test_prompts_map_labels_to_consistent_symbols_with_no_instruction():
    source, label_of = _source()
    config = _config(k_min=2, k_max=5, labels_min=2, labels_max=4, tasks_per_dataset=30)
    prompts = build_symbol_prompts([source], config, 200, seed=3)
    assert len(prompts) == 200
    ks, label_counts, kinds = set(), set(), set()
    for p in prompts:
        exemplars, query = _parse(p.prompt)
        # only Input/Output blocks: no instruction, no label list, no label names
        assert all(name not in p.prompt for name in source.names)
        assert p.prompt.count("Output:") == len(exemplars) + 1
        mapping: dict[str, str] = {}
        for text, symbol in exemplars:
            assert mapping.setdefault(label_of[text], symbol) == symbol  # one symbol per label in a prompt
            assert label_of[text] in p.labels and text != query
        assert len(set(mapping.values())) == len(mapping)  # distinct labels, distinct symbols
        assert dict(zip(p.labels, p.candidates)).items() >= mapping.items()
        assert p.answer == p.candidates[p.labels.index(label_of[query])]
        assert len(set(p.candidates)) == len(p.candidates)
        assert config.k_min <= len(exemplars) == p.k <= config.k_max
        assert config.labels_min <= len(p.candidates) <= config.labels_max
        ks.add(p.k)
        label_counts.add(len(p.candidates))
        kinds.add(p.symbol_kind)
        if p.symbol_kind == "integers":
            assert all(c.isdigit() for c in p.candidates)
        elif p.symbol_kind == "letters":
            assert all(re.fullmatch(r"[A-Z]{2,3}", c) for c in p.candidates)
        else:
            assert set(p.candidates) <= set(TRAIN_WORDS)
    assert ks == {2, 3, 4, 5} and label_counts == {2, 3, 4} and kinds == {"integers", "letters", "words"}
    # the same seed builds the same prompts; another seed others
    assert [p.prompt for p in build_symbol_prompts([source], config, 20, seed=3)] == [p.prompt for p in prompts[:20]]
    assert [p.prompt for p in build_symbol_prompts([source], config, 20, seed=4)] != [p.prompt for p in prompts[:20]]


def test_balanced_selector_shows_every_label_when_k_allows():
    source, label_of = _source(n_labels=3)
    config = _config(k_min=6, k_max=6, labels_min=3, labels_max=3, selector="balanced")
    for p in build_symbol_prompts([source], config, 30, seed=0):
        exemplars, _ = _parse(p.prompt)
        assert sorted({label_of[t] for t, _ in exemplars}) == sorted(p.labels)
        assert sorted(s for _, s in exemplars) == sorted(p.candidates * 2)


def test_selector_options_are_checked():
    source, _ = _source()
    with pytest.raises(ConfigError, match=r"^unknown option for selector 'random' 'per_quer' "
                                          r"\(did you mean 'per_query'\?\); valid: per_query$"):
        build_symbol_prompts([source], _config(selector="random", selector_options={"per_quer": True}), 2)
    prompts = build_symbol_prompts([source], _config(selector="random", selector_options={"per_query": True}), 5)
    assert len(prompts) == 5


def test_symbol_pools_and_eval_words_are_disjoint():
    rng = np.random.default_rng(0)
    assert not set(TRAIN_WORDS) & set(EVAL_WORDS)
    assert len(set(draw_symbols("integers", 50, rng))) == 50
    with pytest.raises(ConfigError, match="^unknown symbol kind 'emoji'"):
        draw_symbols("emoji", 2, rng)
    with pytest.raises(ConfigError, match="^30 labels need more than the 20 unrelated words available$"):
        draw_symbols("words", 30, rng, EVAL_WORDS)


def test_template_has_no_instruction():
    source = load_prompt("symbol_icl.v1").source
    body = re.sub(r"\{#.*?#\}", "", source, flags=re.S)
    assert re.sub(r"\{[{%].*?[%}]\}", "", body).split() == ["Input:", "Output:", "Input:", "Output:"]


class CharTokenizer:
    """One token per character (ids = code points): enough to check masks."""

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def test_loss_mask_covers_only_the_answer_tokens():
    source, _ = _source()
    prompts = build_symbol_prompts([source], _config(), 10, seed=0)
    data, dropped = tokenize_prompts(CharTokenizer(), prompts, max_tokens=10_000)
    assert dropped == 0 and len(data) == 10
    for p, (ids, labels) in zip(prompts, data):
        answer = [ord(c) for c in " " + p.answer]
        assert ids == [ord(c) for c in p.prompt] + answer
        assert labels == [-100] * len(p.prompt) + answer
    longest = max(len(ids) for ids, _ in data)
    kept, dropped = tokenize_prompts(CharTokenizer(), prompts, max_tokens=longest - 1)
    assert dropped == sum(len(ids) == longest for ids, _ in data) and len(kept) == 10 - dropped


def test_answer_loss_reads_only_answer_positions():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    labels = torch.tensor([[-100, -100, -100, 3, 5]])
    loss = answer_loss(logits, labels)
    # positions 2 and 3 predict tokens 3 and 5
    by_hand = -(torch.log_softmax(logits[0, 2], -1)[3] + torch.log_softmax(logits[0, 3], -1)[5]) / 2
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    changed = logits.clone()
    changed[0, :2] += torch.randn(2, 7) * 5  # prompt positions
    changed[0, 4] += 3.0  # the last position predicts nothing
    assert answer_loss(changed, labels).item() == pytest.approx(loss.item(), rel=1e-6)


class CopyBackend:
    """A perfect in-context learner: scores highest the label of the exemplar whose text shares the query's
    class word ('good'/'bad'/'meh'); with no exemplars, always the first candidate."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, candidates):
        out = []
        for prompt, cands in zip(prompts, candidates):
            self.calls.append((prompt, cands))
            exemplars, query = _parse(prompt)
            word = query.split()[0]
            shown = next((" " + lab for text, lab in exemplars if text.split()[0] == word), cands[0])
            out.append([0.0 if c == shown else -5.0 for c in cands])
        return out


def _task(tmp_path, classes: list[str]) -> StressTask:
    rows = [{"text": f"{c} text {i}", "label": c} for i in range(30) for c in classes]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return StressTask(data=DataConfig(path=str(tmp_path / "test.jsonl")),
                      pool=DataConfig(path=str(tmp_path / "train.jsonl")))


def test_stress_settings_on_a_perfect_icl_learner(tmp_path):
    task = _task(tmp_path, ["good", "bad"])
    config = StressConfig(tasks=[task], rows=60, groups=2, k_per_label=2)
    backend = CopyBackend()
    result = evaluate_task(backend, task, config, seed=0)
    # follows the exemplars whatever they say: regular, SUL and flipped (scored against the flipped label) all 1.0
    assert result["regular"] == result["sul"] == result["flipped"] == 1.0
    assert result["zero_shot"] == 0.5  # no exemplars: always the first name (all 60 rows, half of each)
    sul = [c for p, c in backend.calls if not any(" good" == x or " bad" == x for x in c)]
    assert sul and all({x.strip() for x in c} <= set(EVAL_WORDS) for c in sul)
    for prompt, cands in backend.calls:
        assert len(_parse(prompt)[0]) in (0, 4)  # zero-shot or k = 2 per label
    # the same rows and exemplars for the same seed; other exemplars for another seed
    again = CopyBackend()
    evaluate_task(again, task, config, seed=0)
    assert again.calls == backend.calls
    other = CopyBackend()
    evaluate_task(other, task, config, seed=1)
    assert other.calls != backend.calls


def test_flipped_is_null_for_more_than_two_labels(tmp_path):
    task = _task(tmp_path, ["good", "bad", "meh"])
    result = evaluate_task(CopyBackend(), task, StressConfig(tasks=[task], rows=12, groups=3), seed=0)
    assert result["flipped"] is None and result["regular"] == 1.0


def test_summary_flags_gains_beyond_the_seed_spread():
    records = [{"base": {"t": {"sul": b, "flipped": None}}, "tuned": {"t": {"sul": t, "flipped": None}}}
               for b, t in [(0.50, 0.70), (0.52, 0.72), (0.48, 0.68)]]
    row = summarize(records)["t"]["sul"]
    assert row["gain"] == pytest.approx(0.2) and row["beyond_spread"] is True
    assert summarize(records)["t"]["flipped"] == {"base": None, "tuned": None}
    records[0]["tuned"]["t"]["sul"] = 0.30  # a seed that lost: spread swamps the gain
    assert summarize(records)["t"]["sul"]["beyond_spread"] is False
    assert summarize(records[1:2])["t"]["sul"]["beyond_spread"] is None  # one seed: no spread to be beyond


def test_adapter_folder_is_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"^adapter '.*' is not a LoRA adapter folder \(no adapter_config.json\); "
                                          r"give the folder a symbol_tuning run saved"):
        resolve_adapter(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(ConfigError, match="has no adapter_model.safetensors$"):
        resolve_adapter(str(tmp_path))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    first = resolve_adapter(str(tmp_path))
    assert first.rank == 4 and len(first.digest) == 16
    (tmp_path / "adapter_model.safetensors").write_bytes(b"retrained")
    assert resolve_adapter(str(tmp_path)).digest != first.digest  # a re-trained adapter gets a new model_id


RECIPE = str(REPO / "recipes" / "symbol_tuning.yaml")


@pytest.mark.parametrize("override, message", [
    ("tuning.k_min=5", "'tuning': k_min (5) is above k_max (4)"),
    ("tuning.labels_min=5", "'tuning': labels_min (5) is above labels_max (4)"),
    ("tuning.selector=knnn", "'tuning': unknown selector 'knnn' (did you mean 'knn'?); valid: balanced, bm25, epr, "
                             "knn, mmr, random, votek"),
    ("tuning.stepz=3", "unknown key 'tuning.stepz' (did you mean 'steps'?)"),
    ("eval.settings=[regular,flip]", "eval.settings.1"),
    ("model.options.adapter=/tmp/x", "model.options.adapter is set by the recipe itself (each seed's tuned "
                                     "adapter); remove it"),
])
def test_recipe_errors_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPE, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_recipe_refuses_an_eval_task_used_in_tuning(tmp_path):
    text = (REPO / "recipes" / "symbol_tuning.yaml").read_text().replace("sst2/test.jsonl", "ag_news/test.jsonl")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"eval task 'ag_news' is also a tuning dataset; the stress suite measures "
                                          r"tasks not used in tuning \(tuning: ag_news, banking77, clinc150\)$"):
        load_recipe(str(path))
    recipe = load_recipe(RECIPE)
    assert recipe.kind == "symbol_tuning" and recipe.seeds == [0, 1, 2] and recipe.tuning.steps == 60
