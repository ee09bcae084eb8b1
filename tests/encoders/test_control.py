"""The negative-control encoder `control:gaussian:<reference>` (sweep/encoders/control.py): a
seeded Gaussian linear map with the reference's input and embedding shapes, loadable from a spec
beside the model, with no head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweep.encoders import describe_head, load_encoder
from sweep.errors import UserError
from sweep.run.spec import load_spec
from tests.support.sweeps import make_shards, write_spec

LINEAR = "tests.support.encoders:linear_encoder"


def test_gaussian_control_has_the_reference_shapes_and_is_seeded() -> None:
    enc = load_encoder(f"control:gaussian:{LINEAR}", "random:0", device="cpu")
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert enc.input_size == (3, 8, 8) and enc(x).shape == (3, 16)
    assert not enc.has_head and "no classifier" in enc.head_note
    w = enc.module.weight
    assert w.shape == (16, 192) and not w.requires_grad
    assert float(w.std() * 192**0.5) == pytest.approx(1.0, abs=0.1)  # N(0, 1/d)
    # linear, no normalisation: f(a x + b y) = a f(x) + b f(y), f(x) = W x on [0, 1] pixels
    assert torch.allclose(enc(x), x.flatten(1) @ w.T, atol=1e-6)
    same = load_encoder(f"control:gaussian:{LINEAR}", "random:0", device="cpu").module.weight
    other = load_encoder(f"control:gaussian:{LINEAR}", "random:1", device="cpu").module.weight
    assert torch.equal(w, same) and not torch.equal(w, other)


def test_a_timm_reference_is_traced_on_the_meta_device() -> None:
    enc = load_encoder("control:gaussian:vit_tiny_patch16_224", "random:3", device="cpu")
    assert enc.input_size == (3, 224, 224) and enc.module.weight.shape == (192, 3 * 224 * 224)
    assert describe_head("control:gaussian:vit_tiny_patch16_224", "random:3")["label_set"] is None


@pytest.mark.parametrize("model, weights, message", [
    (f"control:gaussian:{LINEAR}", "pretrained", "weights must be random:<seed>"),
    (f"control:uniform:{LINEAR}", "random:0", "use control:gaussian:<model>"),
    ("control:gaussian:", "random:0", "use control:gaussian:<model>"),
])
def test_bad_controls_are_one_line_user_errors(model: str, weights: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_encoder(model, weights, device="cpu")


def test_a_spec_lists_the_control_beside_the_model(tmp_path: Path) -> None:
    make_shards(tmp_path / "shards", 1, 2)
    spec = write_spec(tmp_path / "spec.yaml", str(tmp_path / "shards"), tmp_path / "run",
                      models=[{"name": LINEAR, "weights": "factory"},
                              {"name": f"control:gaussian:{LINEAR}", "weights": "random:0"}],
                      probes=[{"name": "perturb", "params": {"eps": [0.01], "steps": 2}}])
    units = load_spec(spec).units
    assert sorted({u.model for u in units}) == sorted([LINEAR, f"control:gaussian:{LINEAR}"])
