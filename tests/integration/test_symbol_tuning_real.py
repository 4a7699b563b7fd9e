"""Symbol tuning on the real default model: a few steps through `llmlabel run`, the adapter changes and the base
weights do not, and the adapter loads into the Labeler through the transformers and vLLM backends."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO, SHARED_DATA

pytestmark = pytest.mark.slow

TEXTS = ["a gorgeous, witty, seductive movie .", "dull , lifeless and far too long .",
         "What is the capital of Peru ?", "Who wrote Hamlet ?"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tuned(model_dir, tmp_path_factory):
    """`llmlabel run recipes/symbol_tuning.yaml` with a few steps, one seed and a tiny stress suite."""
    from llmlabel.cli import main

    out = tmp_path_factory.mktemp("symbol")
    weights = Path(model_dir) / "model.safetensors"
    before = _sha(weights)
    if not SHARED_DATA.exists():
        if os.environ.get("LLMLABEL_REQUIRE_SHARED") == "1":
            pytest.fail(f"shared data not found at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    data = SHARED_DATA
    argv = ["run", str(REPO / "recipes" / "symbol_tuning.yaml"), "--set", f"output.dir={out}",
            "--set", "seeds=[0]", "--set", "tuning.steps=3", "--set", "tuning.batch_size=2",
            "--set", "tuning.learning_rate=0.01", "--set", "tuning.prompts=20", "--set", "tuning.rows_per_label=8",
            "--set", "tuning.max_tokens=128", "--set", "eval.rows=6", "--set", "eval.groups=1",
            "--set", "eval.k_per_label=1"]
    tuning = ", ".join(f"{{path: '{data / name / 'train.jsonl'}'}}" for name in ["ag_news", "banking77", "clinc150"])
    tasks = ", ".join(f"{{data: {{path: '{data / name / 'test.jsonl'}'}}, "
                      f"pool: {{path: '{data / name / 'train.jsonl'}'}}}}" for name in ["sst2", "trec"])
    argv += ["--set", f"tuning.datasets=[{tuning}]", "--set", f"eval.tasks=[{tasks}]"]
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None)
    return {"out": out, "adapter": out / "seed0" / "adapter", "base_sha": before, "weights": weights}


def test_recipe_tunes_and_evaluates_base_and_tuned(tuned):
    report = json.loads((tuned["out"] / "report.json").read_text())
    record = report["records"][0]
    assert record["tuning"]["prompts"] == 20 and record["tuning"]["sources"] == ["ag_news", "banking77", "clinc150"]
    for model in ("base", "tuned"):
        assert set(record[model]) == {"sst2", "trec"}
        assert record[model]["trec"]["flipped"] is None
        assert all(0 <= v <= 1 for task in record[model].values() for v in task.values() if v is not None)
    assert report["summary"]["sst2"]["sul"]["base"]["values"] == [record["base"]["sst2"]["sul"]]
    info = json.loads((tuned["adapter"] / "symbol_tuning.json").read_text())
    assert len(info["losses"]) == 3


def test_adapter_changed_and_base_weights_untouched(tuned):
    from safetensors.torch import load_file

    assert _sha(tuned["weights"]) == tuned["base_sha"]
    config = json.loads((tuned["adapter"] / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    tensors = load_file(str(tuned["adapter"] / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in tensors.items() if "lora_B" in k}
    assert lora_b and all(k.split(".")[-2] == "lora_B" for k in lora_b)
    # peft starts every B matrix at zero: after training, all of them moved
    assert all(v.abs().max() > 0 for v in lora_b.values())
    assert not any("lora" not in k for k in tensors)  # the adapter holds only LoRA matrices, no base weights


def test_adapter_loads_into_the_labeler_and_changes_its_scores(tuned):
    from llmlabel.backends.base import load_backend
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    task = LabelTask(labels=["positive", "negative", "question"])
    probs = {}
    for name, options in [("base", {}), ("tuned", {"adapter": str(tuned["adapter"])})]:
        backend = load_backend("transformers", None, dtype="float32", **options)
        probs[name] = [r.label_probs for r in Labeler(backend, task).label_texts(TEXTS)]
        probs[name + "_id"] = backend.model_id
        backend.close()
    assert probs["tuned_id"].startswith(probs["base_id"].removesuffix("@float32") + "+lora:")
    diffs = [abs(a[k] - b[k]) for a, b in zip(probs["base"], probs["tuned"]) for k in a]
    assert max(diffs) > 1e-3


VLLM_DRIVER = textwrap.dedent('''
    import json
    import sys

    from llmlabel.backends.vllm import VLLMBackend


    def main():
        spec = json.load(open(sys.argv[1]))
        backend = VLLMBackend(dtype="float32", max_model_len=512, kv_cache_gb=1, adapter=spec["adapter"])
        try:
            result = {"model_id": backend.model_id,
                      "scores": backend.score(spec["prompts"], [spec["candidates"]] * len(spec["prompts"]))}
            # The adapter through the Labeler on vLLM, as a recipe with `model: {backend: vllm, options: {adapter}}`.
            from llmlabel.labeling.labeler import Labeler
            from llmlabel.core.task import LabelTask

            labeler = Labeler(backend, LabelTask(labels=spec["labels"]), calibration="none")
            result["label_probs"] = [r.label_probs for r in labeler.label_texts(spec["texts"])]
        finally:
            backend.close()
        json.dump(result, open(sys.argv[2], "w"))


    if __name__ == "__main__":
        main()
''')


def test_vllm_serves_the_adapter_like_transformers(tuned, tmp_path):
    pytest.importorskip("vllm")
    from llmlabel.backends.base import load_backend
    from llmlabel.training.symbol_tuning import render_icl

    demos = [("a gorgeous, witty movie", "foo"), ("dull and lifeless", "bar")]
    prompts = [render_icl(demos, t) for t in TEXTS] + [render_icl([], t) for t in TEXTS]
    candidates = [" foo", " bar", " positive", " negative"]
    from llmlabel.labeling.labeler import Labeler
    from llmlabel.core.task import LabelTask

    labels = ["positive", "negative", "question"]
    reference = load_backend("transformers", None, dtype="float32", adapter=str(tuned["adapter"]))
    expected = reference.score(prompts, [candidates] * len(prompts))
    expected_probs = [r.label_probs for r in Labeler(reference, LabelTask(labels=labels),
                                                     calibration="none").label_texts(TEXTS)]
    reference.close()
    spec, out = tmp_path / "spec.json", tmp_path / "out.json"
    spec.write_text(json.dumps({"adapter": str(tuned["adapter"]), "prompts": prompts, "candidates": candidates,
                                "labels": labels, "texts": TEXTS}))
    driver = tmp_path / "driver.py"
    driver.write_text(VLLM_DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(driver), str(spec), str(out)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "+lora:" in result["model_id"]
    clear = 0
    for want, got in zip(expected, result["scores"]):
        ranked = sorted(want, reverse=True)
        if ranked[0] - ranked[1] > 0.1:  # clear-margin items: the same top label
            clear += 1
            assert max(range(4), key=got.__getitem__) == max(range(4), key=want.__getitem__)
        assert got == pytest.approx(want, abs=2e-3)  # float32 on both sides: the same numbers
    assert clear >= 4
    for want, got in zip(expected_probs, result["label_probs"]):  # the Labeler on vLLM: the same distributions
        assert got == pytest.approx(want, abs=1e-3)
