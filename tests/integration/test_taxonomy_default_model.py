"""TnT-LLM with the real default model (SmolLM2-135M) on CPU: xgrammar-constrained JSON on the transformers backend,
a schema-valid taxonomy from both methods for 3 seeds, and one small end-to-end run of the shipped recipe."""

from __future__ import annotations

import json

import pytest

from llmlabel.backends.transformers import TransformersBackend
from llmlabel.config import load_recipe
from llmlabel.recipes_index import find_recipe
from llmlabel.taxonomy.base import TaxonomyOut, taxonomy_schema
from llmlabel.taxonomy.recipe import TaxonomyConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend():
    model = TransformersBackend(repetition_penalty=1.15)  # as recipes/tnt_llm.yaml sets it
    yield model
    model.close()


def test_transformers_json_schema_generation_is_schema_valid(backend):
    schema = taxonomy_schema(TaxonomyConfig(), 2, 4)
    prompt = backend.chat_prompt([{"role": "user", "content": "Propose question types for: Who wrote Hamlet? "
                                                              "Where is Rome? Answer in JSON."}])
    raw = backend.generate([prompt, prompt[:-20]], max_tokens=300, json_schema=schema)
    for answer in raw:
        value = TaxonomyOut.model_validate(json.loads(answer))  # parses whole: nothing to repair
        assert 2 <= len(value.labels) <= 4


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["llm", "cluster"])
def test_default_model_yields_a_schema_valid_taxonomy(shared_data, tmp_path, backend, method, seed):
    # Small settings keep CI short; the shipped recipe uses larger samples.
    recipe = load_recipe(find_recipe("tnt_llm"), overrides=[
        f"data.path={shared_data / 'trec' / 'test.jsonl'}", f"taxonomy.method={method}", f"seed={seed}",
        "taxonomy.sample=" + ("16" if method == "llm" else "150"), "taxonomy.minibatch_size=8",
        "taxonomy.minibatches=2", "taxonomy.max_labels=5", "taxonomy.max_tokens=260", "taxonomy.review=false",
        "labeling.sample=12", "distill.classifiers=[tfidf_lr]", "distill.apply=false", f"output.dir={tmp_path}"])
    summary = recipe.run(progress=False, backend=backend)
    assert summary["taxonomy"]["schema_valid"], summary["taxonomy"]["problems"]
    assert 2 <= summary["taxonomy"]["labels"] <= 5
    # A failed step (recorded, previous taxonomy kept) is allowed; the taxonomy must come from a successful one.
    steps = summary["taxonomy"]["steps"]
    assert steps.get("ok", 0) + steps.get("repaired", 0) >= 1, steps
