"""Zero-shot CLIP labels (sweep/encoders/zeroshot.py): the labels against an independent numpy
computation on a hand-built classifier, the classifier against a recomputation through a tiny
random-init open_clip text tower, class lists from a file, the timm <-> open_clip pairing, and
the one-line error where pretrained text weights cannot load. No pretrained weight is used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sweep.encoders import zeroshot
from sweep.errors import UserError

# A hand-built (D=4, C=4) classifier: unit columns with dyadic entries (exact in float32).
CLASSIFIER = np.array(
    [
        [1.0, 0.0, 0.5, 0.5],
        [0.0, 1.0, 0.5, -0.5],
        [0.0, 0.0, 0.5, 0.5],
        [0.0, 0.0, 0.5, -0.5],
    ],
    dtype=np.float32,
)
# Image embeddings whose norms are powers of two (normalisation is exact), and one general row.
IMAGES = np.array(
    [
        [2.0, 0.0, 0.0, 0.0],  # -> class 0
        [0.0, -4.0, 0.0, 0.0],  # -> cos (0, -1, -0.5, 0.5): class 3
        [1.0, 1.0, 1.0, 1.0],  # -> cos (0.5, 0.5, 1, 0): class 2
        [0.0, 0.0, 0.0, 8.0],  # -> cos (0, 0, 0.5, -0.5): class 2
        [0.3, -1.7, 0.2, 0.9],  # a general row
    ],
    dtype=np.float32,
)


def numpy_zero_shot(images: np.ndarray, classifier: np.ndarray,
                    scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probs, logits) in float64, written from the definition."""
    x = images.astype(np.float64)
    x = x / np.sqrt((x * x).sum(axis=1, keepdims=True))
    logits = scale * (x @ classifier.astype(np.float64))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    labels = probs.argmax(axis=1)
    return labels, probs[np.arange(len(labels)), labels], logits


@pytest.mark.parametrize("scale", [1.0, 4.0, 100.0, zeroshot.RANDOM_LOGIT_SCALE])
def test_labels_and_probabilities_match_numpy(scale):
    labels, probs = zeroshot.zero_shot_labels(torch.from_numpy(IMAGES), torch.from_numpy(CLASSIFIER), scale)
    want_labels, want_probs, want_logits = numpy_zero_shot(IMAGES, CLASSIFIER, scale)
    assert labels.dtype == torch.long and labels.shape == (len(IMAGES),)
    assert labels.tolist() == want_labels.tolist()
    # float32 probabilities against the float64 reference: within a few float32 ulps (torch's
    # vectorised exp and numpy's differ in the last bit; exact equality is checked on ties below)
    np.testing.assert_allclose(probs.numpy(), want_probs, rtol=4e-7, atol=0)
    logits = zeroshot.zero_shot_logits(torch.from_numpy(IMAGES), torch.from_numpy(CLASSIFIER), scale).numpy()
    exact_rows = slice(0, 4)  # dyadic rows: the logits are exact, so equal to the last bit
    if scale in (1.0, 4.0):
        assert np.array_equal(logits[exact_rows].astype(np.float64), want_logits[exact_rows])
    assert labels.tolist()[:4] == [0, 3, 2, 2]


def test_exact_probabilities_on_ties_and_first_index():
    """Equal logits: probability exactly 1/C and the first class, as argmax and numpy agree."""
    classifier = torch.eye(4)[:, [0, 1]].repeat(1, 2)  # columns e0, e1, e0, e1: classes 0 and 2 tie, 1 and 3 tie
    images = torch.tensor([[0.0, 0.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]])  # all-zero logits; e0 = e1
    labels, probs = zeroshot.zero_shot_labels(images, classifier, 100.0)
    assert labels.tolist() == [0, 0]
    assert probs.tolist() == [0.25, 0.25]
    want_labels, want_probs, _ = numpy_zero_shot(images.numpy(), classifier.numpy(), 100.0)
    assert want_labels.tolist() == [0, 0] and want_probs.tolist() == [0.25, 0.25]


def test_labels_shape_checks_and_names():
    with pytest.raises(UserError, match="image embeddings have 3 dimensions, the classifier 4"):
        zeroshot.zero_shot_labels(torch.ones(2, 3), torch.from_numpy(CLASSIFIER), 1.0)
    labels, probs = zeroshot.zero_shot_labels(torch.zeros(0, 4), torch.from_numpy(CLASSIFIER), 1.0)
    assert labels.shape == (0,) and probs.shape == (0,)
    assert zeroshot.label_names(torch.tensor([2, 0]), ["a", "b", "c"]) == ["c", "a"]
    assert zeroshot.label_names([None, 5, 1], ["a", "b"]) == [None, None, "b"]


@pytest.fixture(scope="module")
def tiny_tower():
    return zeroshot.load_text_tower(zeroshot.TINY_TEXT, "random:0", embed_dim=24)


def test_tiny_tower_is_small_seeded_and_open_clip_shaped(tiny_tower):
    text, tokenizer = tiny_tower
    assert text.embed_dim == 24 and text.logit_scale == pytest.approx(1 / 0.07)
    assert not any(p.requires_grad for p in text.parameters()) and not text.training
    tokens = tokenizer(["a photo of a dog.", "a cat"])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    out = text.encode_text(tokens)
    assert out.shape == (2, 24)
    again, _ = zeroshot.load_text_tower(zeroshot.TINY_TEXT, "random:0", embed_dim=24)
    other, _ = zeroshot.load_text_tower(zeroshot.TINY_TEXT, "random:1", embed_dim=24)
    assert torch.equal(again.encode_text(tokens), out)
    assert not torch.equal(other.encode_text(tokens), out)
    assert torch.allclose(text.encode_text(tokens, normalize=True).norm(dim=-1), torch.ones(2))


def test_build_classifier_matches_recomputation_through_the_tower(tiny_tower):
    text, tokenizer = tiny_tower
    names = ["goldfish", "tabby cat", "fire truck"]
    templates = [lambda c: f"a photo of a {c}.", "a blurry photo of the {}.", lambda c: f"art of the {c}."]
    classifier = zeroshot.build_classifier(text, tokenizer, names, templates, classes_per_batch=2)
    assert classifier.shape == (24, 3) and classifier.dtype == torch.float32
    columns = []
    for name in names:  # one class at a time, each step written out
        prompts = [t.format(name) if isinstance(t, str) else t(name) for t in templates]
        emb = text.text(tokenizer(prompts)).double()  # the raw TextTransformer, not encode_text
        emb = emb / emb.norm(dim=1, keepdim=True)
        mean = emb.mean(dim=0)
        columns.append(mean / mean.norm())
    expected = torch.stack(columns, dim=1)
    torch.testing.assert_close(classifier.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(classifier.norm(dim=0), torch.ones(3))


def test_imagenet_classifier_shape_uses_open_clips_lists(tiny_tower):
    import open_clip

    names = zeroshot.class_names()
    assert names == list(open_clip.IMAGENET_CLASSNAMES) and len(names) == 1000
    assert len(zeroshot.prompt_templates()) == len(open_clip.OPENAI_IMAGENET_TEMPLATES)
    assert len(zeroshot.prompt_templates("simple")) == len(open_clip.SIMPLE_IMAGENET_TEMPLATES)
    text, tokenizer = tiny_tower
    # the first 20 ImageNet classes, 2 templates: the shape the run caches is (D, C)
    classifier = zeroshot.build_classifier(text, tokenizer, names[:20], zeroshot.prompt_templates()[:2])
    assert classifier.shape == (24, 20)
    with pytest.raises(UserError, match="unknown zero-shot templates"):
        zeroshot.prompt_templates("fancy")


def test_classes_from_a_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("red fox\n\n  snow leopard  \nteapot\n", encoding="utf-8")
    assert zeroshot.class_names(f"file:{path}") == ["red fox", "snow leopard", "teapot"]
    with pytest.raises(UserError, match="no such class-name file"):
        zeroshot.class_names(f"file:{tmp_path / 'missing.txt'}")
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match="names no class"):
        zeroshot.class_names(f"file:{tmp_path / 'empty.txt'}")
    with pytest.raises(UserError, match="unknown zero-shot classes 'cifar'"):
        zeroshot.class_names("cifar")


def test_file_classes_label_names_end_to_end(tmp_path, tiny_tower):
    text, tokenizer = tiny_tower
    path = tmp_path / "classes.txt"
    path.write_text("dog\ncat\n", encoding="utf-8")
    names = zeroshot.class_names(f"file:{path}")
    classifier = zeroshot.build_classifier(text, tokenizer, names, ["a photo of a {}."])
    images = classifier.T.clone() * 3.0  # each image points at one class: labelled as it
    labels, probs = zeroshot.zero_shot_labels(images, classifier, text.logit_scale)
    assert zeroshot.label_names(labels, names) == ["dog", "cat"]
    assert (probs > 0.5).all()


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_pretrained_text_weights_offline_is_one_line(monkeypatch, capfd):
    monkeypatch.setattr(zeroshot, "_hub_reachable", lambda timeout=5.0: False)  # as on this machine
    with pytest.raises(UserError) as info:
        zeroshot.load_text_tower("ViT-B-16-quickgelu", "openai")
    text = _one_line(info.value)
    assert "'openai'" in text and "'ViT-B-16-quickgelu'" in text and "could not be loaded" in text
    assert "local cache" in text and "random:<seed>" in text
    assert "ERROR" not in capfd.readouterr().err  # open_clip's own log line is kept quiet


def test_unknown_pretrained_tag_is_one_line(monkeypatch):
    monkeypatch.setattr(zeroshot, "_hub_reachable", lambda timeout=5.0: True)  # the tag fails before any download
    with pytest.raises(UserError) as info:
        zeroshot.load_text_tower("ViT-B-16", "no_such_tag")
    text = _one_line(info.value)
    assert "'no_such_tag'" in text and "'ViT-B-16'" in text


def test_text_tower_argument_errors():
    with pytest.raises(UserError, match="unknown open_clip config 'ViT-Q-99'"):
        zeroshot.load_text_tower("ViT-Q-99", "random:0")
    with pytest.raises(UserError, match="embeds into 512 dimensions; the image embedding has 24"):
        zeroshot.load_text_tower("ViT-B-16", "random:0", embed_dim=24)
    with pytest.raises(UserError, match="needs the image embedding's width"):
        zeroshot.load_text_tower(zeroshot.TINY_TEXT, "random:0")
    with pytest.raises(UserError, match="the seed must be a whole number"):
        zeroshot.load_text_tower(zeroshot.TINY_TEXT, "random:x", embed_dim=8)
    with pytest.raises(UserError, match="no pretrained weights"):
        zeroshot.load_text_tower(zeroshot.TINY_TEXT, "openai", embed_dim=8)


def test_which_forward_output_is_projected():
    assert zeroshot.forward_is_projected("vit_base_patch16_clip_224.openai")
    assert zeroshot.forward_is_projected("vit_large_patch14_clip_quickgelu_224.dfn2b")
    assert not zeroshot.forward_is_projected("vit_base_patch16_clip_224.openai_ft_in12k_in1k")
    assert not zeroshot.forward_is_projected("vit_base_patch16_clip_224.laion2b_ft_in1k")
    assert not zeroshot.forward_is_projected("resnet50_clip_gap.openai")
    assert not zeroshot.forward_is_projected("vit_tiny_patch16_224.augreg_in21k")
    # tag-less: timm's default tag decides (here a fine-tuned classifier, there a CLIP tag)
    assert not zeroshot.forward_is_projected("vit_base_patch16_clip_224")
    assert not zeroshot.forward_is_projected("vit_base_patch16_clip_224", default_tag="laion2b_ft_in12k_in1k")
    assert zeroshot.forward_is_projected("vit_base_patch32_clip_256", default_tag="datacompxl")


def test_timm_to_open_clip_pairing():
    import open_clip

    assert zeroshot.text_tower_for("vit_base_patch16_clip_224.openai") == ("ViT-B-16-quickgelu", "openai")
    assert zeroshot.text_tower_for("vit_base_patch16_clip_quickgelu_224.openai") == ("ViT-B-16-quickgelu", "openai")
    for timm_name, (config, tag) in zeroshot.TIMM_TO_OPEN_CLIP.items():
        assert zeroshot.forward_is_projected(timm_name)
        assert tag in open_clip.list_pretrained_tags_by_model(config), (timm_name, config, tag)
    for name, why in [("vit_base_patch16_clip_224", "names no pretrained tag"),
                      ("vit_tiny_patch16_224", "is not a CLIP image tower"),
                      ("vit_base_patch16_clip_224.dfn2b", "has no known open_clip text tower")]:
        with pytest.raises(UserError, match=why) as info:
            zeroshot.text_tower_for(name)
        assert "vit_base_patch16_clip_224.openai" in _one_line(info.value)  # the known ones are listed
    assert zeroshot.resolve_text("vit_base_patch16_clip_224.openai", "openai") == ("ViT-B-16-quickgelu", "openai")
    assert zeroshot.resolve_text("vit_base_patch16_clip_224.laion2b", "pretrained") == ("ViT-B-16", "laion2b_s34b_b88k")
    assert zeroshot.resolve_text("vit_base_patch16_clip_224.openai", "random:3") == ("ViT-B-16-quickgelu", "random:3")
    assert zeroshot.resolve_text("vit_base_patch16_clip_224.dfn2b", "tiny:5") == (zeroshot.TINY_TEXT, "random:5")
    with pytest.raises(UserError, match="not a CLIP image tower"):
        zeroshot.resolve_text("vit_tiny_patch16_224", "tiny:0")


def test_projection_of_a_random_timm_clip_tower_is_its_forward():
    """pre_logits + the projection head = the model's forward output (the CLIP image embedding),
    and a ViT-B-16-shaped random text tower pairs with it (D = 512)."""
    from sweep.encoders import load_encoder

    encoder = load_encoder("vit_base_patch32_clip_224.openai", "random:0", device="cpu")
    assert zeroshot.forward_is_projected(encoder.name)
    pixels = torch.rand(2, *encoder.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pre = encoder.embed(pixels)
        full = encoder.module(encoder.normalize(pixels))
    assert pre.shape == (2, 768)
    projected = zeroshot.project_to_clip(encoder.module, pre)
    assert projected.shape == (2, 512)
    torch.testing.assert_close(projected, full, rtol=1e-5, atol=1e-5)
    text, tokenizer = zeroshot.load_text_tower(*zeroshot.resolve_text(encoder.name, "tiny:0"), embed_dim=512)
    classifier = zeroshot.build_classifier(text, tokenizer, ["dog", "cat", "car"], ["a photo of a {}."])
    labels, probs = zeroshot.zero_shot_labels(projected, classifier, text.logit_scale)
    logits = text.logit_scale * F.normalize(full, dim=-1) @ classifier
    assert labels.tolist() == logits.argmax(dim=-1).tolist()
    with pytest.raises(UserError, match="no image-text projection head"):
        zeroshot.project_to_clip(torch.nn.Linear(2, 2), pre)
