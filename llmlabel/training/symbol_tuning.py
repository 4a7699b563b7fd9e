"""Symbol tuning (Wei et al. 2023, "Symbol tuning improves in-context learning in language models").

A model is fine-tuned on in-context prompts whose labels are remapped to arbitrary symbols (random integers, letter
strings, unrelated words) and which carry no instruction, so the only way to answer is to read the input -> label
mapping off the exemplars. Two parts:

- the data builder (`build_symbol_prompts`): from labeled datasets, sub-tasks with a few of each dataset's labels;
  each prompt draws k exemplars with any registered selector, a symbol per label (consistent within the prompt), and
  renders `prompts/symbol_icl.v1.jinja` ("Input: ... / Output: <symbol>" blocks, then the query);
- the trainer (`train_symbol_lora`): LoRA (`peft`) on the causal LM, loss on the answer symbol's tokens only,
  `accelerate` for device placement, a bounded number of steps. It saves a peft adapter (adapter_config.json +
  adapter_model.safetensors) that the transformers and vLLM backends load with their `adapter` option.

Prompts and answers are tokenized exactly as the backends score them (prompt and " <symbol>" encoded separately and
concatenated, no special tokens), so training and scoring see the same token ids.

torch, transformers, peft and accelerate load inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmlabel.config import DataConfig
from llmlabel.errors import ConfigError, DataError

log = logging.getLogger("llmlabel")

PROMPT = "symbol_icl.v1"
SYMBOL_KINDS = ("integers", "letters", "words")

#: Unrelated words for symbol tuning; `EVAL_WORDS` (disjoint) serve the SUL-ICL evaluation, so the stress suite never
#: shows the tuned model a word it was tuned on.
TRAIN_WORDS = (
    "apple", "river", "pencil", "garden", "window", "candle", "bottle", "forest", "ladder", "carpet", "button",
    "engine", "pillow", "rocket", "saddle", "tunnel", "violin", "wallet", "anchor", "basket", "cactus", "dolphin",
    "feather", "glacier", "hammer", "island", "jacket", "kettle", "lemon", "magnet", "needle", "orchid", "parrot",
    "quartz", "rabbit", "silver", "teapot", "umbrella", "velvet", "walnut", "yogurt", "zipper", "marble", "copper",
    "tomato", "helmet", "lantern", "mirror", "pepper", "spider", "tiger", "turnip", "bridge", "castle", "cherry",
    "cotton", "desert", "falcon", "guitar", "harbor",
)
EVAL_WORDS = (
    "foo", "bar", "banana", "compass", "meadow", "oyster", "piano", "puzzle", "shovel", "sponge", "trumpet", "whale",
    "blanket", "cobweb", "donkey", "fossil", "goblet", "hammock", "igloo", "jigsaw",
)


def draw_symbols(kind: str, n: int, rng: np.random.Generator, words: tuple[str, ...] = TRAIN_WORDS) -> list[str]:
    """`n` distinct symbols of `kind`: integers 0-999, strings of 2-3 capital letters, or words from `words`."""
    if kind == "integers":
        return [str(int(v)) for v in rng.choice(1000, size=n, replace=False)]
    if kind == "letters":
        found: list[str] = []
        while len(found) < n:
            word = "".join(chr(65 + int(c)) for c in rng.integers(0, 26, size=int(rng.integers(2, 4))))
            if word not in found:
                found.append(word)
        return found
    if kind == "words":
        if n > len(words):
            raise ConfigError(f"{n} labels need more than the {len(words)} unrelated words available")
        return [words[int(i)] for i in rng.choice(len(words), size=n, replace=False)]
    from llmlabel.errors import unknown

    raise ConfigError(unknown("symbol kind", kind, SYMBOL_KINDS))


def render_icl(examples: list[tuple[str, str]], text: str) -> str:
    """The symbol-ICL prompt: (text, label) exemplars then the query, ending at "Output:" (no instruction)."""
    from llmlabel.core.prompts import load_prompt

    return load_prompt(PROMPT).render(examples=[{"text": t, "label": lab} for t, lab in examples], text=text)


def clip_words(text: str, max_words: int) -> str:
    """`text` cut to its first `max_words` words (keeps prompts short without a tokenizer)."""
    words = str(text).split()
    return " ".join(words[:max_words])


class SymbolTuningConfig(BaseModel):
    """What symbol tuning trains on and how (LoRA on the causal LM, CPU-sized defaults)."""

    model_config = ConfigDict(extra="forbid")
    #: labeled datasets the prompts are built from (keep the evaluation's datasets out of this list)
    datasets: list[DataConfig] = Field(min_length=1)
    #: rows read per label of each dataset (bounds selector fitting and memory)
    rows_per_label: int = Field(60, ge=2)
    #: label sub-tasks drawn per dataset; each has between labels_min and labels_max of its labels
    tasks_per_dataset: int = Field(8, ge=1)
    #: prompts built per seed (training draws steps x batch_size of them, reshuffling when they run out)
    prompts: int = Field(400, ge=1)
    labels_min: int = Field(2, ge=2)
    labels_max: int = Field(4, ge=2)
    #: exemplars per prompt, drawn uniformly in [k_min, k_max]
    k_min: int = Field(2, ge=1)
    k_max: int = Field(4, ge=1)
    symbols: list[Literal["integers", "letters", "words"]] = Field(
        default_factory=lambda: ["integers", "letters", "words"], min_length=1)
    #: exemplar selector (any registered one) and its options
    selector: str = "balanced"
    selector_options: dict[str, Any] = Field(default_factory=dict)
    #: exemplar and query texts are cut to this many words
    max_text_words: int = Field(20, ge=1)
    #: prompts longer than this (prompt + answer tokens) are dropped, and counted
    max_tokens: int = Field(192, ge=16)
    #: optimizer steps (each on batch_size prompts): the bound on tuning time
    steps: int = Field(60, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(5e-4, gt=0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                      min_length=1)
    #: torch threads while tuning (None = torch's default)
    threads: int | None = Field(None, ge=1)
    #: device for accelerate ('cpu' forces CPU; None = accelerate's choice)
    device: Literal["cpu", "auto"] = "cpu"

    @model_validator(mode="after")
    def _ranges(self) -> "SymbolTuningConfig":
        if self.labels_min > self.labels_max:
            raise ValueError(f"labels_min ({self.labels_min}) is above labels_max ({self.labels_max})")
        if self.k_min > self.k_max:
            raise ValueError(f"k_min ({self.k_min}) is above k_max ({self.k_max})")
        from llmlabel.registry import selectors

        if self.selector not in selectors:
            from llmlabel.errors import unknown

            raise ValueError(unknown("selector", self.selector, selectors.names()))
        return self


@dataclass
class SymbolPrompt:
    """One symbol-tuning prompt: the rendered prompt, its answer symbol, the prompt's symbols and provenance."""

    prompt: str
    answer: str
    candidates: list[str]
    source: str
    k: int
    symbol_kind: str
    #: the task's original label names, in the order of `candidates`
    labels: list[str]


@dataclass
class LabeledSource:
    """A labeled dataset read for prompt building: texts, label names per row, and the label set."""

    name: str
    texts: list[str]
    labels: list[str]
    names: list[str]


def source_name(path: str) -> str:
    """A dataset's short name: its folder for a split file ('data/sst2/test.jsonl' -> 'sst2'), else its name."""
    p = Path(path)
    return p.parent.name if p.suffix else p.name


def load_source(data: DataConfig, rows_per_label: int, seed: int = 0) -> LabeledSource:
    """Up to `rows_per_label` random rows of each label of `data` (gold labels needed)."""
    from llmlabel.data import Dataset

    if not data.label_field:
        raise ConfigError(f"symbol tuning needs gold labels: set label_field for {data.path}")
    if data.text_pair_field:
        raise ConfigError(f"symbol tuning builds single-text prompts; drop text_pair_field for {data.path}")
    by_label: dict[str, list[str]] = {}
    for row in Dataset(data.path, split=data.split, limit=data.limit):
        text, label = row.get(data.text_field), row.get(data.label_field)
        if text is None or label is None or not str(text).strip():
            continue
        by_label.setdefault(str(label), []).append(str(text))
    if len(by_label) < 2:
        raise DataError(f"{data.path}: symbol tuning needs at least 2 labels, found {len(by_label)}")
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label in sorted(by_label):
        rows = by_label[label]
        for i in rng.permutation(len(rows))[:rows_per_label]:
            texts.append(rows[int(i)])
            labels.append(label)
    return LabeledSource(source_name(data.path), texts, labels, sorted(by_label))


def build_symbol_prompts(sources: list[LabeledSource], config: SymbolTuningConfig, n_prompts: int,
                         seed: int = 0) -> list[SymbolPrompt]:
    """`n_prompts` symbol-ICL prompts from `sources`.

    Each dataset yields `tasks_per_dataset` sub-tasks (a random subset of its labels, between labels_min and
    labels_max). Each task's rows split into an exemplar pool (3/4, fit once by the selector) and queries (1/4).
    A prompt picks a task, a query, k in [k_min, k_max], exemplars by the selector (re-seeded per prompt, so
    query-independent selectors still vary), a shuffled exemplar order, and one symbol per task label, the same
    symbol wherever that label appears in the prompt.
    """
    from llmlabel.selection.base import Example, make_selector

    rng = np.random.default_rng(seed)
    tasks = []
    for source in sources:
        for _ in range(config.tasks_per_dataset):
            top = min(config.labels_max, len(source.names))
            n = int(rng.integers(min(config.labels_min, top), top + 1))
            names = sorted(source.names[int(i)] for i in rng.choice(len(source.names), size=n, replace=False))
            rows = [i for i, lab in enumerate(source.labels) if lab in names]
            order = [rows[int(i)] for i in rng.permutation(len(rows))]
            cut = max(1, (3 * len(order)) // 4)
            pool, queries = order[:cut], order[cut:]
            if not queries:
                continue
            selector = make_selector(config.selector, seed=int(rng.integers(2**31)), **config.selector_options)
            selector.fit([Example(clip_words(source.texts[i], config.max_text_words), source.labels[i], index=j)
                          for j, i in enumerate(pool)])
            tasks.append((source, names, selector, queries))
    if not tasks:
        raise DataError("no symbol-tuning task has query rows; raise rows_per_label")
    out = []
    for _ in range(n_prompts):
        source, names, selector, queries = tasks[int(rng.integers(len(tasks)))]
        q = queries[int(rng.integers(len(queries)))]
        query = clip_words(source.texts[q], config.max_text_words)
        k = int(rng.integers(config.k_min, config.k_max + 1))
        selector.seed = int(rng.integers(2**31))  # a fresh draw for query-independent selectors
        chosen = list(selector.select(query, k).examples)
        chosen = [chosen[int(i)] for i in rng.permutation(len(chosen))]
        kind = config.symbols[int(rng.integers(len(config.symbols)))]
        symbols = draw_symbols(kind, len(names), rng)
        mapping = dict(zip(names, symbols))
        prompt = render_icl([(ex.text, mapping[ex.label]) for ex in chosen], query)
        out.append(SymbolPrompt(prompt, mapping[source.labels[q]], symbols, source.name, len(chosen), kind, names))
    return out


def answer_text(symbol: str) -> str:
    """The continuation scored and trained after "Output:": the symbol with its leading space."""
    return " " + symbol


TokenizedPrompt = tuple[list[int], list[int]]


def tokenize_prompts(tokenizer: Any, prompts: list[SymbolPrompt],
                     max_tokens: int) -> tuple[list[TokenizedPrompt], int]:
    """(input ids, labels) per prompt, labels -100 everywhere but the answer symbol's tokens; and how many prompts
    were dropped for exceeding `max_tokens`. Prompt and answer are encoded separately, as the backends score them."""
    from llmlabel.backends.base import encodable

    texts = [encodable(p.prompt) for p in prompts]
    answers = [encodable(answer_text(p.answer)) for p in prompts]
    prompt_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"] if answers else []
    out, dropped = [], 0
    for p, a in zip(prompt_ids, answer_ids):
        if len(p) + len(a) > max_tokens:
            dropped += 1
            continue
        out.append((list(p) + list(a), [-100] * len(p) + list(a)))
    return out, dropped


def _collate(batch: list[TokenizedPrompt], pad_id: int) -> dict[str, Any]:
    """Right-padded input ids, attention mask and labels (-100 on padding)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (seq, lab) in enumerate(batch):
        ids[row, :len(seq)] = torch.tensor(seq)
        labels[row, :len(lab)] = torch.tensor(lab)
        mask[row, :len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(logits: Any, labels: Any) -> Any:
    """Mean cross-entropy of the answer tokens (labels != -100), each predicted from the position before it."""
    import torch

    shifted = logits[:, :-1].float()
    target = labels[:, 1:]
    return torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1),
                                             ignore_index=-100)


def train_symbol_lora(model_name: str | None, config: SymbolTuningConfig, prompts: list[SymbolPrompt],
                      out_dir: str | Path, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """LoRA-tune the causal LM `model_name` (None/'smollm2' = the embedded default, or a HF folder) on `prompts` for
    `config.steps` steps; saves the peft adapter into `out_dir`.

    The base model loads in float32 (CPU training); only the LoRA matrices train, so the base weights on disk are
    never written. Returns (and writes to out_dir/symbol_tuning.json) steps, losses, timing and the data counts.
    """
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from llmlabel.terminal import progress_bar
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmlabel.models import resolve_model

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data, dropped = tokenize_prompts(tokenizer, prompts, config.max_tokens)
    if not data:
        raise DataError(f"every symbol-tuning prompt is longer than max_tokens={config.max_tokens}; raise it")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    accelerator = Accelerator(cpu=config.device == "cpu")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                                  weight_decay=0.0)
    # Linear warm-up over the first tenth of the steps, then linear decay: short runs need no more.
    warmup = max(1, config.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (config.steps - s) / max(1, config.steps - warmup))))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    model.train()
    rng = np.random.default_rng(seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    bar = progress_bar(iterable=range(config.steps), desc="symbol tuning", disable=not progress)
    for _ in bar:
        if len(order) < config.batch_size:
            order += [int(i) for i in rng.permutation(len(data))]
        batch = [data[order.pop()] for _ in range(min(config.batch_size, len(data)))]
        inputs = {k: v.to(accelerator.device) for k, v in _collate(batch, pad_id).items()}
        labels = inputs.pop("labels")
        logits = model(**inputs).logits
        loss = answer_loss(logits, labels)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    seconds = time.perf_counter() - start
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.unwrap_model(model).save_pretrained(str(out_dir))
    kinds = {k: sum(p.symbol_kind == k for p in prompts) for k in config.symbols}
    info = {"base_model": path, "seed": seed, "steps": config.steps, "batch_size": config.batch_size,
            "prompts": len(prompts), "prompts_dropped_too_long": dropped, "symbol_kinds": kinds,
            "sources": sorted({p.source for p in prompts}), "seconds": round(seconds, 1),
            "loss_first10": float(np.mean(losses[:10])), "loss_last10": float(np.mean(losses[-10:])),
            "losses": [round(v, 4) for v in losses], "config": config.model_dump()}
    (out_dir / "symbol_tuning.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    (out_dir / "example_prompts.jsonl").write_text(
        "".join(json.dumps(asdict(p)) + "\n" for p in prompts[:20]), encoding="utf-8")
    del model, optimizer
    return info
