"""Int8 weights and activations for the transformers backend on CPU (`quantize="int8"`).

Every linear map inside the decoder layers becomes an int8 x int8 -> int32 matmul (`torch._int_mm`, VNNI on x86):
weights are quantized once per output channel, activations per token at call time, and the int32 result is scaled
back to float. Per-token scales matter: one scale per batch (what `torch.ao`'s dynamic quantization does) let one
row's outliers coarsen every other row's inputs; on SST-2 that changed the top label of about half the rows.

Linear maps that read the same input (attention's q/k/v, the MLP's gate/up) run as one wider matmul: the first
member called computes the whole group and the others take their slices. The model's LM head stays in float (for
generation); scoring uses an int8 copy (`int8_head`) for the log-softmax normalizer only and takes the target tokens'
own logits from the float head (see `TransformersBackend._target_log_probs`).

A few input channels of every linear map are 10-40x larger than the rest, which leaves the others a handful of int8
levels; `smooth_llama_layers` (SmoothQuant, Xiao et al. 2023) moves part of that range into the weights, with scales
measured once on a packaged calibration text (`int8_calibration.v1.txt` beside this module: a spread of the
kinds of input a labeler sees, not a task prompt) and folded into earlier weights,
so it is exact in float and free at run time. What remains is noise: measured on the default model, a label's
log-probability moves by ~0.1 nats when its inputs change in the last float bit (rounding flips), so scores of one
row can differ by that much between batches of different widths, and close calls can flip. Float32 scoring does
not do this; use int8 where speed matters more than the last tenth of a nat.

Measured on a 2-core AVX-512 (VNNI) Xeon: int8 matmuls ran 3.5-4x faster than float32 ones on the 135M model's
shapes (a microbenchmark); the score path's items/s and its agreement with float32 scoring are in
`benchmarks/results/throughput.json`.
"""

from __future__ import annotations

from typing import Any

import torch  # this module is imported only when int8 is asked for
from torch import nn

from llmlabel.errors import ConfigError

#: names of linear maps that take the same input, in the order their outputs are concatenated
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
#: SmoothQuant's migration strength: how much of each input channel's range moves into the weights. 0.7 beat the
#: paper's 0.5 on held-out SST-2 and Banking77 rows (top label equal to float32 scoring on 96% vs 89% and 68% vs 58%
#: of rows), and 0.3 and 0.85 were further from float32 than 0.7 (profiling scripts, not a results file)
SMOOTHING_ALPHA = 0.7
#: the calibration text's file (package data beside this module); its name without `.txt` is in the model id
CALIBRATION_FILE = "int8_calibration.v1.txt"


class Int8Group(nn.Module):
    """Linear maps of one input computed as a single int8 matmul; `part(x, i)` returns map i's output.

    Weights: int8 per output channel (symmetric). Inputs: int8 per token (symmetric), quantized at call time.
    """

    def __init__(self, linears: list[nn.Linear], input_divisor: torch.Tensor | None = None):
        super().__init__()
        weight = torch.cat([lin.weight.detach().float() for lin in linears])
        # Smoothing factors that could not be folded into an earlier weight: inputs are divided by them at call
        # time, weights (here) multiplied.
        self.register_buffer("input_divisor", None if input_divisor is None else input_divisor.float())
        if input_divisor is not None:
            weight = weight * self.input_divisor
        scale = weight.abs().amax(-1).clamp(min=1e-12) / 127
        self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t())
        # The activation's 1/127 is folded into the weight scale: one multiply less per output.
        self.register_buffer("scale", scale / 127)
        biases = [lin.bias for lin in linears]
        self.register_buffer("bias", None if all(b is None for b in biases) else torch.cat(
            [b.detach().float() if b is not None else torch.zeros(lin.weight.shape[0])
             for b, lin in zip(biases, linears)]))
        self.sizes = [int(lin.weight.shape[0]) for lin in linears]
        self._last: tuple[torch.Tensor, tuple[torch.Tensor, ...], set[int]] | None = None

    def compute(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Every member's output for input `x`."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).float()
        if self.input_divisor is not None:
            flat = flat / self.input_divisor
        peak = flat.abs().amax(-1, keepdim=True).clamp_(min=1e-12)
        quantized = (flat * (127.0 / peak)).round_().to(torch.int8)
        out = torch._int_mm(quantized, self.weight_t).float().mul_(peak).mul_(self.scale)
        if self.bias is not None:
            out.add_(self.bias)
        out = out.to(x.dtype).view(*shape[:-1], out.shape[-1])
        return out.split(self.sizes, dim=-1) if len(self.sizes) > 1 else (out,)

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Member `index`'s output for `x`, computing the whole group when `x` is a new input."""
        last = self._last
        if last is None or last[0] is not x:
            last = self._last = (x, self.compute(x), set())
        last[2].add(index)
        out = last[1][index]
        if len(last[2]) == len(self.sizes):  # every member served: drop the references
            self._last = None
        return out


class Int8Linear(nn.Module):
    """Stands in for one member of an `Int8Group` where the model had an `nn.Linear`."""

    def __init__(self, group: Int8Group, index: int):
        super().__init__()
        self._group = (group,)  # a tuple: the group is registered once, on the parent block, not per member
        self.index = index
        self.in_features = int(group.weight_t.shape[0])
        self.out_features = group.sizes[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._group[0].part(x, self.index)


def int8_head(model: Any, calibration_ids: torch.Tensor | None = None, alpha: float = SMOOTHING_ALPHA) -> Int8Group:
    """The LM head as an `Int8Group` (the model's own head is left as it is, for generation).

    With `calibration_ids`, the head's input channels are smoothed like the layers' (`smooth_llama_layers`); the
    factors cannot be folded into the final norm (generation reads that norm's output with the float head), so the
    group divides its input by them at call time: one pass over (tokens x hidden), against the head's
    (tokens x vocabulary) output.
    """
    head = model.get_output_embeddings()
    if calibration_ids is None:
        return Int8Group([head])
    peak = _input_peaks(model, calibration_ids, {"head": head})["head"]
    return Int8Group([head], input_divisor=_smoothing(peak, [head.weight], alpha))


def _input_peaks(model: Any, ids: torch.Tensor, modules: dict[Any, nn.Module]) -> dict[Any, torch.Tensor]:
    """Per-channel max |input| of each of `modules` (key -> module) over one float forward pass of `ids`."""
    peaks: dict[Any, torch.Tensor] = {}
    handles = []
    for key, module in modules.items():
        def record(_module: Any, args: tuple[Any, ...], key: Any = key) -> None:
            peaks[key] = args[0].detach().float().abs().reshape(-1, args[0].shape[-1]).amax(0)
        handles.append(module.register_forward_pre_hook(record))
    try:
        with torch.inference_mode():
            model(input_ids=ids)
    finally:
        for handle in handles:
            handle.remove()
    return peaks


def _channel_peaks(model: Any, layers: Any, ids: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """Per-channel max |input| of each decoder layer's q_proj, o_proj, gate_proj and down_proj over a float forward
    pass of `ids` (these four see the inputs of every linear map: q/k/v share one, gate/up another)."""
    return _input_peaks(model, ids, {(index, name): getattr(block, name)
                                     for index, layer in enumerate(layers)
                                     for block, name in ((layer.self_attn, "q_proj"), (layer.self_attn, "o_proj"),
                                                         (layer.mlp, "gate_proj"), (layer.mlp, "down_proj"))})


def _smoothing(act_peak: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel factor s = act_peak^alpha / weight_peak^(1 - alpha) (Xiao et al. 2023)."""
    weight_peak = torch.cat([w.detach().float().abs() for w in weights]).amax(0)
    return (act_peak.clamp(min=1e-5) ** alpha / weight_peak.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


def smooth_llama_layers(model: Any, layers: Any, ids: torch.Tensor, alpha: float = SMOOTHING_ALPHA) -> None:
    """Move activation outliers into the weights, in place, leaving the float model's function unchanged.

    A few channels of every linear map's input are 10-40x larger than the rest, so one int8 scale per token leaves
    the other channels a handful of levels. Dividing input channel j by s_j and multiplying the weights' column j
    by s_j is exact in float; every division is folded into an earlier weight (the RMSNorm gains before q/k/v and
    gate/up, v_proj's rows before o_proj, up_proj's rows before down_proj), so nothing is added at run time.
    """
    peaks = _channel_peaks(model, layers, ids)
    config = model.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    with torch.no_grad():
        for index, layer in enumerate(layers):
            attn, mlp = layer.self_attn, layer.mlp
            for norm, linears, key in ((layer.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj), "q_proj"),
                                       (layer.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj), "gate_proj")):
                s = _smoothing(peaks[(index, key)], [lin.weight for lin in linears], alpha)
                norm.weight.div_(s.to(norm.weight.dtype))
                for lin in linears:
                    lin.weight.mul_(s.to(lin.weight.dtype))
            # o_proj's input channel (head h, dim d) is value channel (h // group, d): one factor per value channel.
            group = heads // kv_heads
            s = _smoothing(peaks[(index, "o_proj")], [attn.o_proj.weight], alpha)
            s = s.view(kv_heads, group, head_dim).amax(1)  # (kv_heads, head_dim)
            attn.v_proj.weight.div_(s.reshape(-1, 1).to(attn.v_proj.weight.dtype))
            attn.o_proj.weight.mul_(s[:, None, :].expand(kv_heads, group, head_dim).reshape(1, -1)
                                    .to(attn.o_proj.weight.dtype))
            s = _smoothing(peaks[(index, "down_proj")], [mlp.down_proj.weight], alpha)
            mlp.up_proj.weight.div_(s[:, None].to(mlp.up_proj.weight.dtype))
            mlp.down_proj.weight.mul_(s[None].to(mlp.down_proj.weight.dtype))


def quantize_int8(model: Any, calibration_ids: torch.Tensor | None = None) -> int:
    """Replace the linear maps of `model`'s decoder layers by int8 ones, in place; returns how many were replaced.

    Needs a model on the CPU in float32 or bfloat16 whose decoder layers are at `model.<base>.layers` (Llama,
    Mistral, Qwen, SmolLM, ... in `transformers`). With `calibration_ids` (1, tokens) and Llama-style layers,
    activation outliers are first smoothed into the weights (`smooth_llama_layers`).
    """
    if not hasattr(torch, "_int_mm"):
        raise ConfigError("quantize=int8 needs torch._int_mm (torch >= 2.2)")
    prefix = getattr(model, "base_model_prefix", "model")
    layers = getattr(getattr(model, prefix, None), "layers", None)
    if layers is None:
        raise ConfigError(f"quantize=int8 supports decoder-only models with `{prefix}.layers`; "
                          f"'{type(model).__name__}' has none")
    if calibration_ids is not None and llama_style(layers[0]):
        smooth_llama_layers(model, layers, calibration_ids)
    replaced = 0
    for layer in layers:
        for block in layer.children():
            linears = {name: child for name, child in block.named_children() if isinstance(child, nn.Linear)}
            if not linears:
                continue
            groups = [names for names in FUSED_GROUPS if all(n in linears for n in names)]
            grouped = {n for names in groups for n in names}
            groups += [(name,) for name in linears if name not in grouped]
            for k, names in enumerate(groups):
                group = Int8Group([linears[n] for n in names])
                block.add_module(f"int8_group{k}", group)
                for index, name in enumerate(names):
                    setattr(block, name, Int8Linear(group, index))
                    replaced += 1
    return replaced


def llama_style(layer: Any) -> bool:
    """Whether a decoder layer has the Llama layout that `smooth_llama_layers` folds scales into."""
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    return (hasattr(layer, "input_layernorm") and hasattr(layer, "post_attention_layernorm")
            and all(isinstance(getattr(attn, n, None), nn.Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(isinstance(getattr(mlp, n, None), nn.Linear) for n in ("gate_proj", "up_proj", "down_proj"))
            and getattr(attn, "v_proj").bias is None and getattr(mlp, "up_proj").bias is None)


def calibration_text() -> str:
    """The text whose activations set the smoothing scales (a spread of reviews, news, questions, requests and a
    label list, in the default prompt's shape), stripped like a rendered prompt."""
    from importlib import resources

    return resources.files("llmlabel.backends").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8").strip()
