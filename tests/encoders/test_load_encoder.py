"""Encoders: timm names, weight sources, embedding points, frozen parameters, factories."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sweep.encoders import load_encoder
from sweep.errors import UserError


@pytest.fixture(scope="module")
def pixels():
    return torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def vit():
    # random-init weights get no head labels unless the spec names the head (issue 22, point 7)
    return load_encoder("vit_tiny_patch16_224", "random:0", device="cpu", head="imagenet-1k")


def test_timm_encoder_geometry_head_and_frozen_weights(vit, pixels):
    assert vit.input_size == (3, 224, 224)
    assert vit.preprocess.crop_pct == pytest.approx(0.9)
    emb = vit(pixels)
    assert emb.shape == (2, 192) and torch.isfinite(emb).all()
    assert vit.classify(emb).shape == (2, 1000)
    assert not any(p.requires_grad for p in vit.module.parameters())
    # the model's own normalisation (0.5, 0.5) is applied inside embed()
    assert torch.allclose(vit.embed(pixels), vit.embed_normalized((pixels - 0.5) / 0.5))


def test_gradient_reaches_every_input_pixel_and_no_weight(vit, pixels):
    x = pixels[:1].clone().requires_grad_(True)
    vit(x).pow(2).sum().backward()
    assert x.grad is not None and (x.grad != 0).float().mean() > 0.99
    assert all(p.grad is None for p in vit.module.parameters())


def test_random_seed_is_reproducible_and_seed_matters(vit, pixels):
    again = load_encoder("vit_tiny_patch16_224", "random:0", device="cpu")
    other = load_encoder("vit_tiny_patch16_224", "random:1", device="cpu")
    assert torch.equal(vit(pixels), again(pixels))
    assert not torch.allclose(vit(pixels), other(pixels))


@pytest.mark.parametrize("kind", ["safetensors", "pt"])
def test_file_weights_load_safetensors_and_torch_checkpoints(tmp_path, pixels, kind):
    source = load_encoder("vit_tiny_patch16_224", "random:7", device="cpu")
    state = {k: v.contiguous() for k, v in source.module.state_dict().items()}
    path = tmp_path / f"w.{kind}"
    if kind == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    loaded = load_encoder("vit_tiny_patch16_224", f"file:{path}", device="cpu")
    assert torch.equal(loaded(pixels), source(pixels))
    assert loaded.weights == f"file:{path}"


@pytest.mark.parametrize("embed,dim", [("cls:3", 192), ("mean_patch:-1", 192), ("cls:0", 192)])
def test_embedding_points(pixels, embed, dim):
    enc = load_encoder("vit_tiny_patch16_224", "random:0", embed=embed, device="cpu")
    out = enc(pixels)
    assert out.shape == (2, dim)
    assert enc.classify(out) is None  # the head belongs to pre_logits only


def test_cls_of_an_early_block_differs_from_the_last(pixels):
    early = load_encoder("vit_tiny_patch16_224", "random:0", embed="cls:1", device="cpu")(pixels)
    late = load_encoder("vit_tiny_patch16_224", "random:0", embed="cls:11", device="cpu")(pixels)
    assert not torch.allclose(early, late)


def test_factory_encoder_keeps_its_input_size_and_identity_normalisation():
    enc = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    assert enc.input_size == (3, 8, 8)
    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(enc(x), x.flatten(1) @ enc.module.weight.T)


@pytest.mark.parametrize(
    "model,weights,embed,message",
    [
        ("vit_does_not_exist", "random:0", "pre_logits", "unknown timm model"),
        ("vit_tiny_patch16_224", "random:x", "pre_logits", "seed must be a whole number"),
        ("vit_tiny_patch16_224", "hub:abc", "pre_logits", "unknown weight source"),
        ("vit_tiny_patch16_224", "file:/no/such/file.safetensors", "pre_logits", "does not exist"),
        ("vit_tiny_patch16_224", "random:0", "cls:99", "block must be in"),
        ("vit_tiny_patch16_224", "random:0", "middle", "unknown embedding point"),
        ("no_such_package.mod:make", "random:0", "pre_logits", "cannot import encoder factory"),
    ],
)
def test_bad_encoder_names_are_one_line_user_errors(model, weights, embed, message):
    with pytest.raises(UserError, match=message) as info:
        load_encoder(model, weights, embed, device="cpu")
    assert "\n" not in str(info.value)


def test_pretrained_without_network_fails_fast_with_the_alternatives():
    """This machine cannot reach the hub: one line naming random:<seed> and file:, no hang."""
    with pytest.raises(UserError, match=r"random:<seed>.*file:<path>"):
        load_encoder("vit_tiny_patch16_224", "pretrained", device="cpu")


def test_compiled_hot_loop_gives_the_eager_results():
    """Encoder.compile() only swaps the probes' step forward; the numbers stay the same."""
    from sweep.probes import build_probe
    from sweep.probes.base import PairInput

    g = torch.Generator().manual_seed(2)
    pairs = [PairInput(f"p{i}", torch.rand(3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)) for i in range(3)]
    probe = build_probe("match", {"max_steps": 5, "lr": 0.05})
    eager_enc = load_encoder("tests.support.encoders:linear_encoder", "factory", device="cpu")
    eager = {r.pair_id: r.rows[0] for r in probe.run(eager_enc, pairs, batch_size=3)}
    compiled_enc = load_encoder("tests.support.encoders:linear_encoder", "factory", device="cpu").compile()
    compiled = {r.pair_id: r.rows[0] for r in probe.run(compiled_enc, pairs, batch_size=3)}
    assert compiled_enc.loop_fn is not None
    for pid, row in eager.items():
        assert compiled[pid]["steps"] == row["steps"]
        assert compiled[pid]["sq_l2"] == pytest.approx(row["sq_l2"], rel=1e-5)


def test_an_imagenet_classifier_has_a_head_with_named_classes(vit, pixels):
    """vit_tiny_patch16_224 (random weights) classifies over ImageNet-1k: timm's offline class
    metadata names its classes."""
    assert vit.has_head and vit.label_set == "imagenet-1k" and vit.head_note == ""
    assert len(vit.label_names) == 1000
    assert vit.class_names([277, 0, None, 1000]) == ["red fox, Vulpes vulpes", "tench, Tinca tinca", None, None]
    logits = vit.classify(vit(pixels[:1]))
    assert logits.shape == (1, 1000)


def test_random_init_weights_get_no_head_labels(pixels):
    """A random head's argmax is not a class: no head, no class names, the note says why;
    naming the head in the spec still gives it; pretrained weights keep it (meta build)."""
    from sweep.encoders import RANDOM_HEAD_NOTE, describe_head

    rand = load_encoder("vit_tiny_patch16_224", "random:0", device="cpu")
    assert not rand.has_head and rand.label_set is None and rand.label_names is None
    assert rand.classify(rand(pixels[:1])) is None and rand.head_note == RANDOM_HEAD_NOTE
    assert rand.provenance()["has_head"] is False
    assert describe_head("vit_tiny_patch16_224", "random:0") == {"label_set": None, "note": RANDOM_HEAD_NOTE}
    assert describe_head("vit_tiny_patch16_224", "random:0", head="imagenet-1k")["label_set"] == "imagenet-1k"
    assert describe_head("vit_tiny_patch16_224", "pretrained")["label_set"] == "imagenet-1k"


def test_a_clip_projection_is_not_a_head():
    """timm's vit_base_patch16_clip_224.openai has a 512-way "head": the CLIP image projection.
    It gives no head labels; the reason is stated (built with random weights, no forward)."""
    clip = load_encoder("vit_base_patch16_clip_224.openai", "random:0", device="cpu")
    assert clip.module.num_classes == 512  # timm's projection is there...
    assert not clip.has_head and clip.label_set is None and clip.label_names is None  # ...but is no head
    assert clip.classify(torch.zeros(1, 768)) is None
    assert "512-way head is the image-text projection" in clip.head_note
    assert clip.provenance()["head_note"] == clip.head_note


@pytest.mark.parametrize(
    "model,label_set,note",
    [
        ("vit_tiny_patch16_224", "imagenet-1k", ""),
        ("vit_base_patch16_224.augreg_in21k", "imagenet-21k-goog", ""),
        ("vit_base_patch16_clip_224.laion2b_ft_in1k", "imagenet-1k", ""),  # fine-tuned: a classifier again
        ("vit_base_patch16_clip_224.openai", None, "512-way head is the image-text projection"),
        ("vit_huge_patch14_clip_224.laion2b", None, "1024-way head is the image-text projection"),
        ("vit_base_patch16_siglip_224", None, "has no classifier head"),
    ],
)
def test_describe_head_reads_timm_metadata_without_weights(model, label_set, note):
    from sweep.encoders import describe_head

    got = describe_head(model, "pretrained")  # built on the meta device: nothing is downloaded
    assert got["label_set"] == label_set and note in got["note"]
    if label_set is None:
        assert got["note"]


def test_head_labels_need_the_pre_logits_embedding():
    from sweep.encoders import describe_head

    got = describe_head("vit_tiny_patch16_224", "pretrained", "cls:3")
    assert got["label_set"] is None and "pre_logits" in got["note"]


def test_a_factory_classifier_is_a_head_named_by_its_label_names():
    unnamed = load_encoder("tests.support.tiny_models:tiny_vit", device="cpu")
    assert unnamed.has_head and unnamed.label_set == "factory" and unnamed.class_names([3]) == [None]
    named = load_encoder("tests.support.tiny_models:named_tiny_vit", device="cpu")
    assert named.has_head and named.class_names([3, 10]) == ["class 3", None]
    plain = load_encoder("tests.support.encoders:linear_encoder", device="cpu")
    assert not plain.has_head and "no `classifier`" in plain.head_note
