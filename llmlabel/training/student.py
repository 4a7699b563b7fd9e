"""Students: a sequence-classification head on a small decoder LM, trained on generated (soft or hard) labels.

A student is `AutoModelForSequenceClassification` on a decoder LM (the default SmolLM2-135M-Instruct, or any local
Llama-style folder): the last token's hidden state goes through a linear `score` head. What learns:

- `method: lora` (default): LoRA adapters (via `peft`) on `lora_targets` of the top `train_layers` layers, plus the
  head;
- `method: full`: every weight of the top `train_layers` layers (None = all layers), the final norm and the head;
- `method: head`: the head only (a linear probe on the frozen model).

Why only the top layers: on a CPU, a forward and backward pass through all 30 layers of the 135M model takes ~1 s per
example. The layers below the trained ones are frozen, so their output for a text never changes; `FeatureCache`
computes it once per text (in bfloat16, stopping the forward pass there) and training runs only the top layers on the
cached hidden states. That is the same computation as training the whole model with those layers frozen, minus the
repeated work (`tests/integration/test_students.py` checks the cached path against the saved, merged model).

Training runs under `accelerate` (CPU here, the GPU where there is one). `Student.save` writes a Hugging Face folder
(LoRA merged) that `StudentClassifier` and `AutoModelForSequenceClassification` load, the LoRA adapter on request,
`student.json` (labels, settings, metrics) and a model card (README.md).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from llmlabel.errors import ConfigError, ModelError

STUDENT_FILE = "student.json"
#: Peak learning rates that trained well on SST-2 in short CPU schedules (see benchmarks/weak_to_strong.py).
DEFAULT_LR = {"lora": 3e-3, "full": 1e-4, "head": 1e-2}


class StudentConfig(BaseModel):
    """How a student is built and trained (the `student:` section of the training recipes)."""

    model_config = ConfigDict(extra="forbid")
    #: base model: 'smollm2' (the embedded default) or a local Hugging Face folder of a Llama-style decoder
    model: str = "smollm2"
    method: Literal["lora", "full", "head"] = "lora"
    #: layers that learn, counted from the top (None = all); the frozen layers below are computed once and cached
    train_layers: int | None = Field(2, ge=0)
    lora_r: int = Field(16, gt=0)
    lora_alpha: float = Field(32.0, gt=0)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    #: tokens per text (longer texts are cut)
    max_length: int = Field(64, gt=0)
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, gt=0)
    #: peak learning rate (default per method: lora 3e-3, full 1e-4, head 1e-2)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    #: fraction of steps with a linear learning-rate warm-up (then linear decay to 0)
    warmup: float = Field(0.1, ge=0, lt=1)
    #: 'ce': cross-entropy on the (soft) labels; 'aux': Burns et al.'s auxiliary confidence loss
    loss: Literal["ce", "aux"] = "ce"
    #: aux loss: maximum weight of the hardened self-predictions, and the fraction of steps it warms up over
    aux_alpha: float = Field(0.75, ge=0, le=1)
    aux_warmup: float = Field(0.2, ge=0, le=1)
    seed: int = 0
    #: 'cpu', 'cuda', ... (default: what accelerate picks: the GPU when there is one)
    device: str | None = None
    #: precision of the cached frozen-layer hidden states, and of the saved weights
    feature_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    save_dtype: Literal["bfloat16", "float32"] = "bfloat16"
    #: what `save` writes: the merged HF folder, the LoRA adapter (method lora), or both
    save: Literal["merged", "adapter", "both"] = "merged"


# -- tokenization and batching shared by the cache, the trainer and the classifier ---------------------------------
def load_tokenizer(path: str) -> Any:
    """The base model's tokenizer with a pad token (decoder LMs often have none: use EOS)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text, cut to `max_length`; an empty text becomes one pad token (it still gets a vector)."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    return [seq if seq else [tokenizer.pad_token_id] for seq in ids]


def length_batches(lengths: Sequence[int], batch_tokens: int = 4096, max_batch: int = 64) -> list[list[int]]:
    """Indices grouped by similar length (longest first) so each padded batch stays under `batch_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, lengths[i])
        if current and (longest_if * (len(current) + 1) > batch_tokens or len(current) >= max_batch):
            batches.append(current)
            current, longest_if = [], lengths[i]
        current.append(i)
        longest = longest_if
    if current:
        batches.append(current)
    return batches


def left_pad(rows: Sequence[Any], pad: Any = 0) -> tuple[Any, Any, Any]:
    """Stack 1-D id lists or (len, hidden) tensors, padded on the left, with the attention mask and position ids.

    Positions count real tokens only (cumsum of the mask), so a left-padded text gets the same positions, and hence the
    same hidden states, as the text alone; the last position is always the text's last token, which the head reads.
    """
    import torch

    tensors = [r if isinstance(r, torch.Tensor) else torch.tensor(r, dtype=torch.long) for r in rows]
    longest = max(t.shape[0] for t in tensors)
    shape = (len(tensors), longest, *tensors[0].shape[1:])
    out = torch.full(shape, pad, dtype=tensors[0].dtype) if tensors[0].dtype == torch.long else \
        torch.zeros(shape, dtype=tensors[0].dtype)
    mask = torch.zeros((len(tensors), longest), dtype=torch.long)
    for i, t in enumerate(tensors):
        out[i, longest - t.shape[0]:] = t
        mask[i, longest - t.shape[0]:] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return out, mask, positions


def _decoder(model: Any) -> Any:
    """The decoder stack (with `.layers` and `.norm`) inside a sequence-classification model."""
    decoder = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if decoder is None or not hasattr(decoder, "layers") or not hasattr(decoder, "norm"):
        raise ModelError(f"student model {type(model).__name__} is not a Llama-style decoder (needs .model.layers and "
                         ".model.norm); use the default model or a Llama/Qwen/Mistral-style folder")
    return decoder


class _Stop(Exception):
    """Raised by the capture hook to end a forward pass once the wanted hidden states are in hand."""


class FeatureCache:
    """Hidden states entering layer `split` of a decoder LM, per text, computed once (in `dtype`) and kept in memory.

    `split == num_layers` means the input of the final norm (for a head-only student). One forward pass captures every
    requested split and stops at the highest, so the layers above it are never run.

    Args:
        model: 'smollm2' or a local folder (must match the student's model).
        max_length: tokens per text.
        dtype: 'bfloat16' (fast on CPU and GPU) or 'float32'.
        device: torch device (default: cuda when available).
        batch_tokens: padded tokens per forward pass.
    """

    def __init__(self, model: str = "smollm2", max_length: int = 64, dtype: str = "bfloat16",
                 device: str | None = None, batch_tokens: int = 4096):
        from llmlabel.models import resolve_model

        self.path = resolve_model(model)
        self.max_length = max_length
        self.dtype = dtype
        self.device = device
        self.batch_tokens = batch_tokens
        self._tokenizer: Any = None
        self._model: Any = None
        self._store: dict[tuple[int, str], Any] = {}
        self.seconds = 0.0
        self.texts_computed = 0

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer (pad token set)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path)
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The frozen base decoder in `dtype`, loaded on first use."""
        if self._model is None:
            import torch
            from transformers import AutoModel

            from llmlabel.backends.transformers import resolve_device

            self._model = AutoModel.from_pretrained(self.path, dtype=getattr(torch, self.dtype))
            self._model.to(resolve_device(self.device)).eval()
        return self._model

    @property
    def num_layers(self) -> int:
        """Decoder layers of the base model."""
        return len(self.model.layers)

    def compute(self, texts: Sequence[str], splits: Iterable[int], progress: bool = False) -> None:
        """Compute and keep the hidden states at every split in `splits` for the texts that lack them."""
        import torch
        from llmlabel.terminal import progress_bar

        splits = sorted(set(splits))
        if any(s < 0 or s > self.num_layers for s in splits):
            raise ConfigError(f"feature split must be within 0..{self.num_layers}, got {splits}")
        todo = list(dict.fromkeys(t for t in texts for s in splits if (s, t) not in self._store))
        if not todo:
            return
        start = time.perf_counter()
        model = self.model
        ids = encode(self.tokenizer, todo, self.max_length)
        captured: dict[int, Any] = {}

        def hook_for(split: int) -> Any:
            def hook(_module: Any, args: tuple, kwargs: dict) -> None:
                captured[split] = args[0] if args else kwargs["hidden_states"]
                if split == splits[-1]:
                    raise _Stop

            return hook

        handles = [(model.layers[s] if s < self.num_layers else model.norm).register_forward_pre_hook(
            hook_for(s), with_kwargs=True) for s in splits]
        device = next(model.parameters()).device
        bar = progress_bar(total=len(todo), disable=not progress, unit="text", desc="caching frozen layers")
        try:
            with torch.inference_mode():
                for batch in length_batches([len(x) for x in ids], self.batch_tokens):
                    input_ids, mask, positions = left_pad([ids[i] for i in batch], self.tokenizer.pad_token_id)
                    captured.clear()
                    try:
                        model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                              position_ids=positions.to(device), use_cache=False)
                    except _Stop:
                        pass
                    for split in splits:
                        hidden = captured[split].to("cpu")
                        for row, i in enumerate(batch):
                            # The head reads only the last position (the norm is per position), so a head-only split
                            # keeps just that one; trained layers need every position.
                            n = 1 if split == self.num_layers else len(ids[i])
                            self._store[(split, todo[i])] = hidden[row, hidden.shape[1] - n:].clone()
                    bar.update(len(batch))
        finally:
            bar.close()
            for handle in handles:
                handle.remove()
        self.texts_computed += len(todo)
        self.seconds += time.perf_counter() - start

    def get(self, texts: Sequence[str], split: int, progress: bool = False) -> list[Any]:
        """(length, hidden) tensors of the texts at `split` (computed on first request)."""
        self.compute(texts, [split], progress=progress)
        return [self._store[(split, t)] for t in texts]

    def close(self) -> None:
        """Free the base model (cached states stay)."""
        self._model = None


def _top_module(shell: Any, score: Any) -> Any:
    """nn.Module: the trained top layers (`shell`, fed the cached states) and the head, reading the last position."""
    import torch

    class Top(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shell = shell
            self.score = score

        def forward(self, hidden: Any, mask: Any, positions: Any) -> Any:
            if not len(self.shell.layers):  # head only: the final norm and the head on the last position
                return self.score(self.shell.norm(hidden[:, -1]))
            out = self.shell(inputs_embeds=hidden, attention_mask=mask, position_ids=positions, use_cache=False)
            return self.score(out.last_hidden_state[:, -1])

    return Top()


def _shell(decoder: Any, split: int) -> Any:
    """A decoder of the same class whose layers are `decoder.layers[split:]` (shared, not copied) and whose norm and
    rotary embedding are `decoder`'s: fed hidden states through `inputs_embeds`, it runs exactly the top layers."""
    import copy

    from transformers import AutoModel

    config = copy.deepcopy(decoder.config)
    total = config.num_hidden_layers
    config.num_hidden_layers = total - split
    config.vocab_size = 1  # the shell's own embedding table is never used
    config.pad_token_id = None
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[split:]
    shell = AutoModel.from_config(config, attn_implementation=decoder.config._attn_implementation)
    shell.layers = decoder.layers[split:]
    shell.norm = decoder.norm
    shell.rotary_emb = decoder.rotary_emb
    return shell


def _as_targets(targets: Any, n_classes: int) -> np.ndarray:
    """(n, C) float distributions from class indices or probability rows."""
    array = np.asarray(targets)
    if array.ndim == 1:
        if len(array) and (array.min() < 0 or array.max() >= n_classes):
            raise ConfigError(f"target class index out of range 0..{n_classes - 1}")
        out = np.zeros((len(array), n_classes), dtype=np.float32)
        out[np.arange(len(array)), array.astype(np.int64)] = 1.0
        return out
    if array.ndim != 2 or array.shape[1] != n_classes:
        raise ConfigError(f"targets must be class indices or (n, {n_classes}) probabilities, got shape {array.shape}")
    array = np.clip(array.astype(np.float32), 0.0, None)
    sums = array.sum(axis=1, keepdims=True)
    return np.divide(array, sums, out=np.full_like(array, 1.0 / n_classes), where=sums > 0)


class Student:
    """A trainable student: the base model as a sequence classifier over `labels`, set up per `config`.

    Args:
        labels: class names, in the order of target columns.
        config: a `StudentConfig` (or a dict of its fields).
        features: a `FeatureCache` to share between students of the same base model (one is made when None).
    """

    def __init__(self, labels: Sequence[str], config: StudentConfig | dict[str, Any] | None = None,
                 features: FeatureCache | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification

        from llmlabel.models import resolve_model

        self.config = config if isinstance(config, StudentConfig) else StudentConfig(**(config or {}))
        cfg = self.config
        self.labels = [str(x) for x in labels]
        if len(self.labels) < 2:
            raise ConfigError(f"a student needs at least 2 labels, got {self.labels}")
        self.path = resolve_model(cfg.model)
        if features is None:
            features = FeatureCache(cfg.model, cfg.max_length, cfg.feature_dtype, cfg.device)
        elif features.path != self.path or features.max_length != cfg.max_length:
            raise ConfigError(f"feature cache is for {features.path} (max_length {features.max_length}), the student "
                              f"for {self.path} (max_length {cfg.max_length})")
        self.features = features
        self.tokenizer = features.tokenizer
        torch.manual_seed(cfg.seed)  # the new head's initialization
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, num_labels=len(self.labels), id2label=dict(enumerate(self.labels)),
            label2id={n: i for i, n in enumerate(self.labels)}, dtype=torch.float32)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        decoder = _decoder(model)
        n_layers = len(decoder.layers)
        trained = 0 if cfg.method == "head" else (n_layers if cfg.train_layers is None
                                                  else min(cfg.train_layers, n_layers))
        self.split = n_layers - trained
        self.n_layers = n_layers
        if cfg.method == "lora":
            if trained == 0:
                raise ConfigError("student method 'lora' needs train_layers >= 1 (method 'head' trains the head alone)")
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                              target_modules=list(cfg.lora_targets),
                              layers_to_transform=list(range(self.split, n_layers)),
                              modules_to_save=["score"], task_type="SEQ_CLS")
            try:
                model = get_peft_model(model, lora)
            except ValueError as exc:
                raise ConfigError(f"student.lora_targets {cfg.lora_targets}: {str(exc).splitlines()[0]}") from None
            inner = model.base_model.model
        else:
            inner = model
            for param in model.parameters():
                param.requires_grad_(False)
            trainable = [inner.score] + ([decoder.norm, *decoder.layers[self.split:]] if trained else [])
            for module in trainable:
                for param in module.parameters():
                    param.requires_grad_(True)
        self.model = model
        self._build_top(inner)
        self.merged = False
        self.history: dict[str, Any] = {}

    def _build_top(self, inner: Any) -> None:
        self.top = _top_module(_shell(_decoder(inner), self.split), inner.score)

    @property
    def lr(self) -> float:
        """The peak learning rate: `config.lr`, else the method's default."""
        return self.config.lr or DEFAULT_LR[self.config.method]

    @property
    def trainable_parameters(self) -> int:
        """Number of parameters that learn."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _device(self) -> Any:
        from accelerate import Accelerator

        cpu = self.config.device == "cpu"
        return Accelerator(cpu=cpu, mixed_precision="no")

    def fit(self, texts: Sequence[str], targets: Any, weights: Sequence[float] | None = None,
            progress: bool = True) -> dict[str, Any]:
        """Train on `texts` with `targets` (class indices or (n, C) label distributions) and optional row weights.

        Rows with weight 0 are dropped. Returns (and keeps in `history`) steps, seconds and the loss curve.
        """
        import torch
        from llmlabel.terminal import progress_bar

        from llmlabel.training.losses import aux_alpha, aux_confidence_loss, soft_cross_entropy

        if self.merged:
            raise ConfigError("this student was saved (LoRA merged); build a new Student to train again")
        cfg = self.config
        texts = [str(t) for t in texts]
        target_array = _as_targets(targets, len(self.labels))
        if len(target_array) != len(texts):
            raise ConfigError(f"{len(texts)} texts but {len(target_array)} targets")
        weight_array = np.ones(len(texts), dtype=np.float32) if weights is None else \
            np.asarray(weights, dtype=np.float32)
        keep = np.flatnonzero(weight_array > 0)
        if not len(keep):
            raise ConfigError("no training rows left (every row was filtered out or has weight 0)")
        texts = [texts[i] for i in keep]
        target_array, weight_array = target_array[keep], weight_array[keep]
        use_weights = weights is not None and not np.allclose(weight_array, 1.0)
        feats = self.features.get(texts, self.split, progress=progress)

        accelerator = self._device()
        self.model.to(accelerator.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=cfg.weight_decay)
        steps = max(1, math.ceil(len(texts) * cfg.epochs / cfg.batch_size))
        warm = int(cfg.warmup * steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: (s + 1) / (warm + 1) if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
        top, optimizer = accelerator.prepare(self.top, optimizer)
        generator = torch.Generator().manual_seed(cfg.seed)
        needed = steps * cfg.batch_size
        order = torch.cat([torch.randperm(len(texts), generator=generator)
                           for _ in range(math.ceil(needed / len(texts)))])[:needed].tolist()
        targets_t = torch.from_numpy(target_array)
        weights_t = torch.from_numpy(weight_array)
        losses: list[float] = []
        start = time.perf_counter()
        top.train()
        bar = progress_bar(iterable=range(steps), disable=not progress, desc=f"training student ({cfg.loss})",
                           unit="step")
        for step in bar:
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            hidden, mask, positions = left_pad([feats[i] for i in idx])
            device = accelerator.device
            logits = top(hidden.to(device, torch.float32), mask.to(device), positions.to(device))
            batch_targets = targets_t[idx].to(device)
            batch_weights = weights_t[idx].to(device) if use_weights else None
            if cfg.loss == "aux":
                alpha = aux_alpha(step, steps, cfg.aux_alpha, cfg.aux_warmup)
                loss = aux_confidence_loss(logits, batch_targets, alpha, batch_weights)
            else:
                loss = soft_cross_entropy(logits, batch_targets, batch_weights)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
        bar.close()
        top.eval()
        self.history = {"rows": len(texts), "steps": steps, "lr": self.lr,
                        "seconds": round(time.perf_counter() - start, 2),
                        "loss_first": float(np.mean(losses[:10])), "loss_last": float(np.mean(losses[-10:])),
                        "trainable_parameters": self.trainable_parameters}
        return self.history

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(n, C) class probabilities, computed on the cached frozen states (fast: only the top layers run)."""
        import torch

        texts = [str(t) for t in texts]
        feats = self.features.get(texts, self.split, progress=progress)
        device = next(self.top.parameters()).device
        dtype = next(self.top.score.parameters()).dtype
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        self.top.eval()
        with torch.inference_mode():
            for batch in length_batches([f.shape[0] for f in feats], batch_tokens=4096, max_batch=batch_size):
                hidden, mask, positions = left_pad([feats[i] for i in batch])
                logits = self.top(hidden.to(device, dtype), mask.to(device), positions.to(device))
                out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Most probable label name of each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def save(self, path: str | Path, metrics: dict[str, Any] | None = None, info: dict[str, Any] | None = None
             ) -> Path:
        """Write the student to folder `path` (see `StudentConfig.save`), with student.json and a model card.

        Saving the merged model merges the LoRA weights into this student's base weights (it can still predict, not
        train).
        """
        import torch

        cfg = self.config
        path = Path(path).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        lora = cfg.method == "lora"
        if lora and cfg.save in ("adapter", "both"):
            self.model.save_pretrained(str(path / "adapter"))
        if cfg.save in ("merged", "both") or not lora:
            if lora and not self.merged:
                self.model = self.model.merge_and_unload()
                self.merged = True
                self._build_top(self.model)
            dtype = getattr(torch, cfg.save_dtype)
            state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.model.state_dict().items()}
            self.model.save_pretrained(str(path), state_dict=state)
            self.tokenizer.save_pretrained(str(path))
            # save_pretrained records the in-memory (float32) dtype; the weights on disk are `save_dtype`.
            config_file = path / "config.json"
            config = json.loads(config_file.read_text(encoding="utf-8"))
            config["dtype"] = cfg.save_dtype
            config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        record = {
            "labels": self.labels, "base_model": self.path, "max_length": cfg.max_length,
            "format": "merged" if (cfg.save in ("merged", "both") or not lora) else "adapter",
            "trained_layers": self.n_layers - self.split, "num_layers": self.n_layers,
            "config": cfg.model_dump(), "training": self.history, "metrics": metrics or {}, **(info or {}),
        }
        (path / STUDENT_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        from llmlabel.training.card import write_model_card

        write_model_card(path, record)
        return path


class StudentClassifier:
    """A saved student, loaded for labeling: `predict`, `predict_proba`, and Labeler-style `label_texts` / `label`.

    Args:
        path: a folder written by `Student.save` (merged model, or adapter + the base model it names).
        dtype: 'bfloat16' (default; the precision the student's frozen layers were cached in) or 'float32'.
        device: torch device (default: cuda when available).
        batch_tokens: padded tokens per forward pass.
    """

    def __init__(self, path: str | Path, dtype: str = "bfloat16", device: str | None = None,
                 batch_tokens: int = 4096):
        import torch
        from transformers import AutoModelForSequenceClassification

        from llmlabel.backends.transformers import resolve_device

        self.path = Path(path).expanduser()
        info_file = self.path / STUDENT_FILE
        if not info_file.exists():
            raise ModelError(f"{self.path} is not a saved student (no {STUDENT_FILE}); train one with "
                             "`llmlabel run recipes/distill_student.yaml`")
        self.info = json.loads(info_file.read_text(encoding="utf-8"))
        self.labels: list[str] = self.info["labels"]
        self.max_length = int(self.info["max_length"])
        self.batch_tokens = batch_tokens
        kwargs = dict(num_labels=len(self.labels), dtype=getattr(torch, dtype))
        if (self.path / "config.json").exists():
            self.tokenizer = load_tokenizer(str(self.path))
            model = AutoModelForSequenceClassification.from_pretrained(str(self.path), **kwargs)
        elif (self.path / "adapter").exists():
            from peft import PeftModel

            base = self.info["base_model"]
            self.tokenizer = load_tokenizer(base)
            model = AutoModelForSequenceClassification.from_pretrained(base, **kwargs)
            model = PeftModel.from_pretrained(model, str(self.path / "adapter")).merge_and_unload()
        else:
            raise ModelError(f"{self.path} has neither a model (config.json) nor an adapter folder")
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = model.to(resolve_device(device)).eval()

    @property
    def metrics(self) -> dict[str, Any]:
        """Metrics recorded when the student was saved."""
        return self.info.get("metrics", {})

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n, C) class probabilities."""
        import torch

        ids = encode(self.tokenizer, [str(t) for t in texts], self.max_length)
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for batch in length_batches([len(x) for x in ids], self.batch_tokens):
                input_ids, mask, positions = left_pad([ids[i] for i in batch], self.tokenizer.pad_token_id)
                logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                    position_ids=positions.to(device), use_cache=False).logits
                out[batch] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """Most probable label of each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def label_texts(self, texts: Sequence[str]) -> list[Any]:
        """`LabelResult`s, like `Labeler.label_texts` (empty texts are 'skipped')."""
        from llmlabel.core.results import LabelResult

        texts = [str(t) if t is not None else "" for t in texts]
        live = [i for i, t in enumerate(texts) if t.strip()]
        probs = self.predict_proba([texts[i] for i in live]) if live else np.zeros((0, len(self.labels)))
        results = [LabelResult(None, {n: 0.0 for n in self.labels}, 0.0, "skipped", "empty text") for _ in texts]
        for row, i in enumerate(live):
            best = int(probs[row].argmax())
            results[i] = LabelResult(self.labels[best], {n: float(p) for n, p in zip(self.labels, probs[row])},
                                     float(probs[row, best]))
        return results

    def label(self, rows: Sequence[dict[str, Any]], text_field: str = "text", label_field: str | None = "label"
              ) -> list[dict[str, Any]]:
        """Rows plus the Labeler's columns (label, label_probs, confidence, status, reason, truncated); an input
        column with one of those names is kept renamed, as the Labeler does (gold `label` -> `gold_label`)."""
        results = self.label_texts([r.get(text_field) for r in rows])
        return [merge_result(row, result, label_field) for row, result in zip(rows, results)]


def merge_result(row: dict[str, Any], result: Any, label_field: str | None = "label") -> dict[str, Any]:
    """`row` plus a LabelResult's columns; colliding input columns renamed like `Labeler.merge` does."""
    from llmlabel.core.results import merge_columns

    return merge_columns(row, result.as_columns("score"), label_field)


def update_student_record(path: str | Path, metrics: dict[str, Any]) -> None:
    """Add `metrics` to a saved student's student.json and rewrite its model card."""
    from llmlabel.training.card import write_model_card

    path = Path(path)
    record = json.loads((path / STUDENT_FILE).read_text(encoding="utf-8"))
    record["metrics"] = {**record.get("metrics", {}), **metrics}
    (path / STUDENT_FILE).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_model_card(path, record)
