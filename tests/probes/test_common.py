"""The probes' shared helpers (sweep/probes/common.py) and the head's top-1 (sweep/probes/labels.py),
against plain torch: the precision policy seen in the dtype a matrix product comes out in,
chunked embedding against one matrix product, head labels against a softmax written out here."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from sweep.encoders import load_encoder
from sweep.probes.common import autocast, embed_fp32, floats, head_labels, item_generator
from sweep.probes.labels import head_top1


@pytest.fixture(scope="module")
def linear():
    return load_encoder("tests.support.encoders:linear_encoder", "factory", device="cpu")


def _product_dtype(ctx: contextlib.AbstractContextManager) -> torch.dtype:
    a = torch.ones(2, 2)
    with ctx:
        return (a @ a).dtype


@pytest.mark.parametrize(("device", "precision", "want"), [
    ("cpu", "fp32", None), ("cpu", "auto", None), ("cpu", "bf16", ("cpu", torch.bfloat16)),
    ("cuda", "fp32", None), ("cuda", "auto", ("cuda", torch.bfloat16)), ("cuda", "bf16", ("cuda", torch.bfloat16)),
])
def test_precision_policy(device: str, precision: str, want: tuple | None) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA autocast is off without CUDA
        ctx = autocast(torch.device(device), precision)
    if want is None:
        assert isinstance(ctx, contextlib.nullcontext)
        assert _product_dtype(ctx) == torch.float32
    else:
        assert isinstance(ctx, torch.autocast) and (ctx.device, ctx.fast_dtype) == want
        if device == "cpu":
            assert _product_dtype(ctx) == torch.bfloat16


def test_item_generator_is_stable_and_depends_on_seed_and_identity() -> None:
    # pinned: a change here re-seeds every per-item draw of every stored run
    assert item_generator(0, "p1", 3).initial_seed() == 5025495589935883022
    draws = {repr(torch.rand(4, generator=item_generator(*key)).tolist())
             for key in [(0, "p1", 3), (1, "p1", 3), (0, "p2", 3), (0, "p1", 4), (0, "p1"), (0,)]}
    assert len(draws) == 6
    assert torch.equal(torch.rand(4, generator=item_generator(7, "a")), torch.rand(4, generator=item_generator(7, "a")))
    assert all(0 <= item_generator(s, "x").initial_seed() < 2**63 for s in range(50))


def test_embed_fp32_in_chunks_equals_one_matrix_product(linear) -> None:
    seen: list[int] = []
    hook = linear.module.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    try:
        x = torch.rand(150, 3, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
        got = embed_fp32(linear, x)
        assert seen == [64, 64, 22] and got.dtype == torch.float32 and not got.requires_grad
        want = x.detach().double().flatten(1) @ linear.module.weight.detach().double().T
        assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)
        seen.clear()
        assert embed_fp32(linear, x[:5], chunk=2).shape == (5, 16) and seen == [2, 2, 1]
        assert embed_fp32(linear, x[:0]).shape == (0,)
    finally:
        hook.remove()


def test_head_labels_against_a_plain_softmax(linear) -> None:
    e = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    assert head_labels(linear, e) == ([None] * 4, [None] * 4)  # no head
    head = torch.nn.Linear(16, 5)
    with torch.no_grad():
        head.weight.copy_(torch.randn(5, 16, generator=torch.Generator().manual_seed(2)))
        head.bias.copy_(torch.linspace(-1, 1, 5))
    linear.head = head
    try:
        classes, probs = head_labels(linear, e)
    finally:
        linear.head = None
    logits = e.double() @ head.weight.detach().double().T + head.bias.detach().double()
    p = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    assert classes == p.argmax(dim=1).tolist()
    assert probs == pytest.approx(p.max(dim=1).values.tolist(), rel=1e-6)


def test_head_top1_of_known_logits() -> None:
    assert head_top1(None) == ([], [])
    logits = torch.tensor([[1.0, 2.0, 3.0], [5.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float16)
    classes, probs = head_top1(logits)
    assert classes == [2, 0, 0]  # equal logits: the first class
    want = [math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3)), math.exp(5) / (math.exp(5) + 2 * math.e), 1 / 3]
    assert probs == pytest.approx(want, rel=1e-6)  # softmax in fp32, not fp16
    assert all(isinstance(c, int) for c in classes) and all(isinstance(v, float) for v in probs)


def test_floats_are_plain_python_floats() -> None:
    t = torch.tensor([0.1, 2.5, -3.0], requires_grad=True)
    got = list(floats(t * 1))
    assert got == [float(v) for v in t.detach().tolist()] and all(type(v) is float for v in got)
