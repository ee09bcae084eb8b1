"""Zero-shot labels in a run (issue 23): spec fields checked before any unit, the classifier built
once and cached in the run, zs_* columns of match and perturb equal to a recomputation from the
cached classifier, and a hand-built classifier's argmax and probabilities checked exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sweep.errors import UserError
from sweep.run import zeroshot as run_zs
from sweep.run.spec import load_spec
from sweep.run.store import RunStore
from sweep.run.worker import EncoderCache, run_unit
from tests.support.sweeps import FAST_PROBES, LINEAR, make_shards, read_table, write_spec

CLASSES = ["cat", "dog", "bird", "fish"]


def _classes(tmp: Path) -> str:
    path = tmp / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return f"file:{path}"


@pytest.fixture(scope="module")
def zs_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("zs")
    make_shards(tmp / "shards", 1, 3)
    classes = _classes(tmp)
    model = {"name": LINEAR, "weights": "factory", "text": "tiny:0", "classes": classes, "templates": "simple"}
    loaded = load_spec(write_spec(tmp / "spec.yaml", str(tmp / "shards"), tmp / "run", models=[model],
                                  probes=FAST_PROBES[:2]))
    cache = EncoderCache("cpu")
    for unit in loaded.units:
        assert run_unit(unit, cache, str(tmp / "run"), run_id="zs").status == "ok"
    (tmp / "run" / "spec.yaml").write_text(loaded.to_yaml())  # what replay reads
    return tmp / "run", classes


def test_zs_columns_are_filled_and_match_the_cached_classifier(zs_run: tuple[Path, str]) -> None:
    run_dir, classes = zs_run
    store = RunStore(run_dir)
    files = store.parquet_files(run_zs.CACHE_DIR)
    assert len(files) == 1  # one classifier for the setting, shared by both probes' units
    [record] = run_zs.records(store)
    assert record["n_classes"] == len(CLASSES) and record["text_config"] == "tiny"
    cache = EncoderCache("cpu")
    encoder = cache.get(LINEAR, "factory", "pre_logits", text=("tiny:0", classes, "simple"), store=store)
    W = encoder.zero_shot.classifier.numpy().astype(np.float64)
    emb = {(r["pair_id"], r["role"]): np.asarray(r["embedding"], np.float64)
           for r in read_table(run_dir, "embeddings").to_pylist() if r["role"] in ("src", "tgt")}
    for probe in ("match", "perturb"):
        rows = [r for r in read_table(run_dir, probe).to_pylist() if r["status"] == "ok"]
        assert rows
        for row in rows:
            for role in ("src", "tgt", "adv"):
                assert row[f"zs_{role}"] is not None and row[f"zs_{role}_name"] == CLASSES[row[f"zs_{role}"]]
                assert 1 / len(CLASSES) <= row[f"zs_prob_{role}"] <= 1
            for role in ("src", "tgt"):  # fp16-stored embeddings: same label unless a near-tie
                e = emb[(row["pair_id"], role)]
                logits = record["logit_scale"] * (e / np.linalg.norm(e)) @ W
                p = np.exp(logits - logits.max())
                p /= p.sum()
                if np.sort(p)[-1] - np.sort(p)[-2] > 1e-2:
                    assert row[f"zs_{role}"] == int(p.argmax())
                assert row[f"zs_prob_{role}"] == pytest.approx(p.max(), abs=2e-3)


def test_no_text_leaves_zs_null_and_ids_unchanged(tmp_path: Path) -> None:
    make_shards(tmp_path / "shards", 1, 1)
    plain = load_spec(write_spec(tmp_path / "a.yaml", str(tmp_path / "shards"), tmp_path / "run"))
    with_text = load_spec(write_spec(tmp_path / "b.yaml", str(tmp_path / "shards"), tmp_path / "run", models=[
        {"name": LINEAR, "weights": "factory", "text": "tiny:0", "classes": _classes(tmp_path)}]))
    assert plain.units[0].text is None
    assert {u.unit_id for u in plain.units}.isdisjoint({u.unit_id for u in with_text.units})
    # an id made before zero-shot existed: the plain spec keeps it (text adds to the hash only when set)
    from sweep.run.spec import ModelSpec, unit_id_of
    m = ModelSpec(name=LINEAR, weights="factory")
    assert unit_id_of(m, "match", "{}", "s", 0) == unit_id_of(ModelSpec(name=LINEAR, weights="factory"), "match", "{}", "s", 0)


@pytest.mark.parametrize(("model", "message"), [
    ({"name": LINEAR, "weights": "factory", "text": "openai"}, "models.0.text: 'openai': a factory encoder takes only tiny:<seed>"),
    ({"name": LINEAR, "weights": "factory", "text": "tiny:0", "classes": "file:/nope.txt"}, "no such class-name file"),
    ({"name": LINEAR, "weights": "factory", "text": "tiny:0", "classes": "cifar"}, "unknown zero-shot classes"),
    ({"name": "vit_tiny_patch16_224", "text": "tiny:0"}, "models.0.text: zero-shot labels: timm model 'vit_tiny_patch16_224'"),
    ({"name": "vit_base_patch16_clip_224", "text": "random:0"}, "names no pretrained tag"),
    ({"name": "vit_base_patch16_clip_224.openai", "embed": "cls:5", "text": "tiny:0"}, "not cls:5"),
    ({"name": "vit_base_patch16_clip_224.openai", "text": "laion9000"}, "no pretrained text weights 'laion9000' for 'ViT-B-16-quickgelu'"),
])
def test_text_is_checked_before_any_unit(tmp_path: Path, model: dict, message: str) -> None:
    make_shards(tmp_path / "shards", 1, 1)
    with pytest.raises(UserError, match=None) as err:
        load_spec(write_spec(tmp_path / "s.yaml", str(tmp_path / "shards"), tmp_path / "run", models=[model]))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_hand_built_classifier_argmax_and_probabilities_exactly() -> None:
    """A 2-d embedding, 3 classes at known angles: the labels and softmax probabilities are those
    computed by hand (logit_scale 10, unit columns)."""
    W = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64).float()  # (D=2, C=3)
    zs = run_zs.ZeroShot(W, 10.0, ["east", "north", "west"], project=lambda e: 2 * e)
    e = torch.tensor([[3.0, 4.0], [-1.0, 0.0], [0.0, -5.0]])
    labels, probs = zs.labels(e)
    assert labels == [1, 2, 0]
    for row, (x, y) in zip(range(3), [(0.6, 0.8), (-1.0, 0.0), (0.0, -1.0)]):
        logits = 10.0 * np.array([x, y, -x])
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert probs[row] == pytest.approx(float(p.max()), rel=1e-6)
    # the tie of the third row (east and west both 0): the first index, as torch.max does
    assert zs.names(labels) == ["north", "west", "east"]


def test_replay_recomputes_the_zs_columns(zs_run: tuple[Path, str]) -> None:
    from sweep.finished.replay import replay_pair

    run_dir, _ = zs_run
    report = replay_pair(str(run_dir), "pair-000001", alone=True)
    assert {u.probe for u in report.units} == {"match", "perturb"}
    for unit in report.units:
        assert {"zs_src", "zs_tgt", "zs_adv", "zs_prob_adv"} <= set(unit.compared), unit.not_replayed
    assert report.agrees, [(u.probe, u.differences) for u in report.units]


@pytest.mark.slow  # a ViT-B/32 at random init: ~15 s alone, minutes on a loaded 2-core machine
def test_a_timm_clip_tower_is_labelled_on_its_projected_embedding(tmp_path: Path) -> None:
    """vit_base_patch32_clip_224.openai at random init (no download): the classifier is D = 512
    wide (the projection's output, not the 768-wide pre_logits) and the labels of pre_logits are
    those of the model's own forward output (its head is the CLIP projection)."""
    from sweep.encoders import load_encoder
    from sweep.encoders.zeroshot import zero_shot_labels

    encoder = load_encoder("vit_base_patch32_clip_224.openai", "random:0")
    zs = run_zs.zero_shot_for(None, encoder, "tiny:0", _classes(tmp_path), "simple")
    assert tuple(zs.classifier.shape) == (512, len(CLASSES))
    pixels = torch.rand(3, *encoder.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pre_logits = encoder.embed(pixels)
        projected = encoder.module(encoder.normalize(pixels))  # the timm forward: the CLIP embedding
    assert pre_logits.shape[-1] == 768 and projected.shape[-1] == 512
    labels, probs = zs.labels(pre_logits)
    want_labels, want_probs = zero_shot_labels(projected, zs.classifier, zs.logit_scale)
    assert labels == want_labels.tolist()
    assert probs == pytest.approx(want_probs.double().tolist(), rel=1e-5)
