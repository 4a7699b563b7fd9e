"""Int8 linear maps and SmoothQuant folding (`quantize="int8"` on the transformers backend), on a tiny random Llama."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llmlabel.backends.int8 import (  # noqa: E402
    Int8Group,
    Int8Linear,
    int8_head,
    quantize_int8,
    smooth_llama_layers,
)
from llmlabel.errors import ConfigError  # noqa: E402


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # outlier input channels, as trained models have: what smoothing is for
        for layer in model.model.layers:
            layer.input_layernorm.weight[:3] = 20.0
    return model


def test_int8_group_matches_float_and_is_row_independent():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(64, 48, bias=False), torch.nn.Linear(64, 16, bias=True)
    group = Int8Group([a, b])
    x = torch.randn(5, 7, 64)
    out_a, out_b = group.compute(x)
    assert out_a.shape == (5, 7, 48) and out_b.shape == (5, 7, 16)
    with torch.no_grad():
        for out, ref in ((out_a, a(x)), (out_b, b(x))):
            assert float((out - ref).norm() / ref.norm()) < 0.02
    # One scale per token: a row's output does not depend on the other rows of its batch.
    alone = group.compute(x[2:3])[0]
    assert torch.equal(alone[0], out_a[2])


def test_group_members_share_one_matmul():
    lin_q, lin_k = torch.nn.Linear(8, 8, bias=False), torch.nn.Linear(8, 4, bias=False)
    group = Int8Group([lin_q, lin_k])
    q, k = Int8Linear(group, 0), Int8Linear(group, 1)
    calls = []
    original = group.compute
    group.compute = lambda x: calls.append(1) or original(x)
    x = torch.randn(3, 8)
    q(x), k(x)
    assert len(calls) == 1 and group._last is None  # computed once, references dropped once both were served
    q(x.clone())
    assert len(calls) == 2  # a new input tensor is computed afresh


def test_smoothing_leaves_the_float_model_unchanged():
    model = tiny_llama()
    ids = torch.randint(0, 97, (2, 12))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    smooth_llama_layers(model, model.model.layers, torch.randint(0, 97, (1, 20)))
    with torch.inference_mode():
        after = model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def test_quantized_model_stays_close_and_smoothing_helps():
    ids = torch.randint(0, 97, (3, 10))
    calibration = torch.randint(0, 97, (1, 32))
    errors = {}
    for smooth in (False, True):
        model = tiny_llama()
        with torch.inference_mode():
            ref = torch.log_softmax(model(input_ids=ids).logits, -1)
        assert quantize_int8(model, calibration if smooth else None) == 2 * 7
        assert isinstance(model.model.layers[0].self_attn.k_proj, Int8Linear)
        with torch.inference_mode():
            out = torch.log_softmax(model(input_ids=ids).logits, -1)
        errors[smooth] = float((out - ref).abs().mean())
    assert errors[True] < 0.05
    assert errors[True] < errors[False]


def test_int8_head_stays_close_leaves_the_model_alone_and_smoothing_helps():
    model = tiny_llama()
    with torch.no_grad():  # outlier channels at the head's input too
        model.model.norm.weight[:3] = 20.0
    ids = torch.randint(0, 97, (3, 10))
    with torch.inference_mode():
        hidden = model.model(input_ids=ids).last_hidden_state
        ref = torch.log_softmax(model.lm_head(hidden), -1)
    head_before = model.lm_head.weight.clone()
    errors = {}
    for smooth in (False, True):
        head = int8_head(model, torch.randint(0, 97, (1, 32)) if smooth else None)
        with torch.inference_mode():
            errors[smooth] = float((torch.log_softmax(head.compute(hidden)[0], -1) - ref).abs().mean())
    assert torch.equal(model.lm_head.weight, head_before)  # tied to the embeddings; generation keeps the float head
    assert errors[True] < 0.05
    assert errors[True] < errors[False]


def test_quantize_needs_decoder_layers():
    message = r"^quantize=int8 supports decoder-only models with `model.layers`; 'Sequential' has none$"
    with pytest.raises(ConfigError, match=message):
        quantize_int8(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_backend_refuses_unknown_quantize_and_gpu_int8():
    from llmlabel.backends.transformers import TransformersBackend

    with pytest.raises(ConfigError, match=r"^unknown quantize 'int4'; valid: int8 \(or leave it unset\)$"):
        TransformersBackend(quantize="int4")
    with pytest.raises(ConfigError, match=r"^quantize=int8 runs on the CPU only; on 'cuda' use dtype bfloat16$"):
        TransformersBackend(quantize="int8", device="cuda")


def test_backend_refuses_a_non_positive_token_budget():
    from llmlabel.backends.transformers import TransformersBackend

    with pytest.raises(ConfigError, match=r"^batch_tokens must be a positive number of tokens, got 0$"):
        TransformersBackend(batch_tokens=0, device="cpu")


def test_int8_normalizer_shifts_every_target_of_a_position_alike():
    """Under quantize=int8 only the log-softmax normalizer comes from the int8 head: the target tokens' logits are
    float32, so int8 and float log-probabilities differ by one constant per position (label margins at a position
    are float32's), and that constant is small."""
    from llmlabel.backends.transformers import TransformersBackend

    model = tiny_llama()
    backend = TransformersBackend.__new__(TransformersBackend)  # the scoring maths only, on a tiny model
    backend.model, backend._head_weight, backend._int8_head = model, None, None
    states = torch.randn(2, 3, 64)
    sources = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    targets = torch.tensor([5, 9, 5, 40, 1, 2, 96])
    with torch.inference_mode():
        exact = backend._target_log_probs(states, sources, targets)
        backend._int8_head = int8_head(model, torch.randint(0, 97, (1, 32)))
        approximate = backend._target_log_probs(states, sources, targets)
    shift = approximate - exact  # (rows, entries)
    for position in range(3):
        same = shift[:, sources == position]
        assert torch.allclose(same, same[:, :1].expand_as(same), atol=1e-5)
    assert float(shift.abs().max()) < 0.1


def test_the_calibration_text_ships_beside_the_module_and_is_not_a_prompt():
    """The int8 smoothing scales are measured on a packaged text (not a prompt template): its id stays in the model
    id, so moving the file out of prompts/ changed no cache key."""
    from llmlabel.backends.int8 import calibration_text
    from llmlabel.backends.transformers import INT8_CALIBRATION
    from llmlabel.core.prompts import available

    text = calibration_text()
    assert text.startswith("Classify the text. Possible labels:") and text.endswith("Answer with the label only.")
    assert INT8_CALIBRATION == "int8_calibration.v1" and "int8_calibration" not in available()
