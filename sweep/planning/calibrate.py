"""`vitsweep plan --calibrate`: time a few encoder passes of each model of a spec on this device.

For every model the spec names, at the spec's batch size: a no-grad forward, a forward +
backward to the input (fp32, and bf16 autocast on CUDA), a forward-mode JVP and a batch of fp32
backward rows sharing one forward (torch.vmap over torch.func.vjp, as the fp32 Jacobian of
`lipschitz`'s `null` runs them), each warmed up once and then timed over `reps` calls (one by
default: a handful of passes per model, so that it takes seconds; the figures are rough, as a
plan is). Weights do not change the speed, so a timm model is built with a seeded random
initialisation (no download); a factory encoder is built as the spec says. Float64 passes are
not timed: the plan times them at the fp32 rates (`Passes`).

The rates also carry the sizes some pass counts depend on (the embedding size D at the model's
embedding point, the input size d = 3 H W), read off the embeddings measured. Without
calibration `model_dims` finds them for a timm model by tracing its embedding function on the
meta device (no weights, no arithmetic); a factory encoder's D is known only by running it,
which the plan leaves to `--calibrate`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch

from sweep.planning.rates import Rates
from sweep.run.spec import LoadedSpec


def calibrate(loaded: LoadedSpec, device: str | None = None, reps: int = 1) -> dict[str, Rates]:
    """Measured rates (image-passes per second) by model name."""
    from sweep.encoders import default_device, load_encoder

    dev = torch.device(device) if device else default_device()
    batch = loaded.spec.batch_size
    rates: dict[str, Rates] = {}
    for model in loaded.spec.models:
        if model.name in rates:
            continue
        weights = model.weights if ":" in model.name else "random:0"
        enc = load_encoder(model.name, weights, model.embed, device=dev)
        rates[model.name] = _measure(enc, model.name, batch, reps, dev)
    return rates


def model_dims(model: str, weights: str, embed: str) -> tuple[int, int] | None:
    """(D, d) of a timm model: the embedding size at `embed` and the input values 3 * H * W,
    from a trace on the meta device; None for a factory encoder (its code is not run here)."""
    from sweep.encoders import _load_timm

    if ":" in model:
        return None
    enc = _load_timm(model, weights, embed, meta=True)
    x = torch.empty(1, *enc.input_size, device="meta")
    with torch.no_grad():
        out = enc.embed_fn(enc.module, x)
    return int(out.shape[-1]), int(x[0].numel())


def _measure(enc: Any, model: str, batch: int, reps: int, dev: torch.device) -> Rates:
    x = torch.rand(batch, *enc.input_size, device=dev)  # (B, 3, H, W) pixels
    fwd = _rate(lambda: _forward(enc, x), batch, reps, dev)
    step32 = _rate(lambda: _step(enc, x, None), batch, reps, dev)
    step16 = _rate(lambda: _step(enc, x, torch.bfloat16), batch, reps, dev) if dev.type == "cuda" else step32
    jvp = _rate(lambda: _jvp(enc, x), batch, reps, dev)
    row = _rate(lambda: _rows(enc, x), batch, reps, dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    with torch.no_grad():
        dim = int(enc.embed(x[:1]).shape[-1])
    return Rates(
        step_bf16=step16, step_fp32=step32, forward=fwd, jvp=jvp, cuda=dev.type == "cuda",
        dims=(dim, int(x[0].numel())), backward_row=row,
        source=f"measured now on {name}, batch {batch}, {model} (eager; step fp32 {step32:.3g}, "
        f"bf16 {step16:.3g}, forward {fwd:.3g}, jvp {jvp:.3g}, Jacobian row {row:.3g} image-passes/s)",
    )


def _forward(enc: object, x: torch.Tensor) -> None:
    with torch.no_grad():
        enc.embed(x)  # type: ignore[attr-defined]


def _step(enc: object, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    xg = x.detach().requires_grad_(True)
    if dtype is None:
        e = enc.loop_embed(xg)  # type: ignore[attr-defined]
    else:
        with torch.autocast("cuda", dtype=dtype):
            e = enc.loop_embed(xg)  # type: ignore[attr-defined]
    torch.autograd.grad(e.float().pow(2).sum(), xg)


def _jvp(enc: object, x: torch.Tensor) -> None:
    v = torch.randn_like(x)
    with enc.forward_ad_friendly():  # type: ignore[attr-defined]
        torch.func.jvp(enc.embed, (x,), (v,))  # type: ignore[attr-defined]


def _rows(enc: object, x: torch.Tensor) -> None:
    """len(x) fp32 backward rows J^T w_i at one image, one forward (sweep/probes/jacobian.py's way)."""
    from sweep.probes.jacobian import no_tf32

    ctx = enc.forward_ad_friendly() if x.device.type == "cuda" else contextlib.nullcontext()  # type: ignore[attr-defined]
    with no_tf32(), ctx:
        out, pullback = torch.func.vjp(lambda z: enc.embed(z)[0], x[:1].detach())  # type: ignore[attr-defined]
        torch.vmap(pullback)(torch.randn(len(x), out.numel(), device=x.device))


def _rate(fn: Callable[[], None], batch: int, reps: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, kernel selection)
    _sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(device)
    return batch * reps / max(time.perf_counter() - start, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
