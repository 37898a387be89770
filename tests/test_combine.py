"""`loss.combine=joint`: one auxiliary pair zipped onto every MNRL row, both losses summed in every optimiser step,
so `loss.aux_weight` turns the update's direction (in `alternate`, clipping and Adam cancel it)."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from conftest import train_settings

from contrastive.losses import JointLoss, WeightedLoss, auxiliary, build_losses, mnrl
from contrastive.pairs import AUX_COLUMNS, joint_examples
from contrastive.samplers import ComponentBatchSampler


def _frames(n_mnrl: int, n_aux: int) -> dict[str, pd.DataFrame]:
    trip = pd.DataFrame({"anchor": [f"a{i}" for i in range(n_mnrl)], "positive": [f"p{i}" for i in range(n_mnrl)]})
    trip["negative"] = [f"n{i}" for i in range(n_mnrl)]
    pairs = pd.DataFrame({"anchor": ["x0", "x1"], "positive": ["y0", "y1"]})
    aux = pd.DataFrame(
        {"sentence1": [f"s{i}" for i in range(n_aux)], "sentence2": [f"t{i}" for i in range(n_aux)]}
    ).assign(label=[float(i % 2) for i in range(n_aux)])
    return {"mnrl_triplets": trip, "mnrl_pairs": pairs, "aux_pairs": aux}


def test_joint_examples_zip_one_aux_pair_onto_every_mnrl_row():
    frames = _frames(5, 4)
    out, stats = joint_examples(frames, seed=0)
    assert set(out) == {"mnrl_triplets", "mnrl_pairs"}  # no separate auxiliary dataset
    assert list(out["mnrl_triplets"].columns) == ["anchor", "positive", "negative", *AUX_COLUMNS, "label"]
    assert list(out["mnrl_pairs"].columns) == ["anchor", "positive", *AUX_COLUMNS, "label"]
    rows = pd.concat([out["mnrl_triplets"], out["mnrl_pairs"]])
    assert len(rows) == 7 and stats == {"joint_aux_pairs": 4, "joint_aux_unused": 0, "joint_rows": 7}
    # every zipped pair is a real auxiliary pair with its own label; 4 pairs over 7 rows: each used once or twice
    aux = frames["aux_pairs"].set_index("sentence1")
    for s1, s2, label in zip(rows[AUX_COLUMNS[0]], rows[AUX_COLUMNS[1]], rows["label"]):
        assert aux.loc[s1, "sentence2"] == s2 and aux.loc[s1, "label"] == label
    assert sorted(rows[AUX_COLUMNS[0]].value_counts().tolist()) == [1, 2, 2, 2]
    pd.testing.assert_frame_equal(joint_examples(frames, seed=0)[0]["mnrl_triplets"], out["mnrl_triplets"])
    assert not joint_examples(frames, seed=1)[0]["mnrl_triplets"].equals(out["mnrl_triplets"])  # seeded order


def test_joint_examples_count_unused_pairs_and_pass_through_without_aux():
    out, stats = joint_examples(_frames(3, 10))
    assert stats == {"joint_aux_pairs": 10, "joint_aux_unused": 5, "joint_rows": 5}
    assert out["mnrl_triplets"][AUX_COLUMNS[0]].is_unique
    frames = {k: v for k, v in _frames(3, 2).items() if k != "aux_pairs"}
    assert joint_examples(frames) == (frames, {})


def test_joint_rows_are_batched_component_clean():
    """A joint dataset has a label column but its MNRL texts still need component-clean batches."""
    from datasets import Dataset

    rows, _ = joint_examples(_frames(4, 4))
    ds = Dataset.from_pandas(rows["mnrl_triplets"], preserve_index=False)
    lookup = {"a0": 1, "a1": 1, "p2": 2, "p3": 2}  # rows 0/1 share a component, rows 2/3 too
    sampler = ComponentBatchSampler(ds, batch_size=2, drop_last=False, lookup=lookup)
    assert not sampler.plain and sampler.text_columns == ["anchor", "positive", "negative"]
    for batch in sampler:
        assert not ({0, 1} <= set(batch) or {2, 3} <= set(batch))


def test_joint_loss_returns_mnrl_plus_weighted_aux(minilm):
    cfg = train_settings().loss
    joint = JointLoss(mnrl(minilm, cfg), auxiliary(minilm, cfg), 2.0, "aux_cosine")
    texts = [["How do I learn Python?", "Is the earth flat?"], ["Best way to learn Python?", "Is earth round?"]]
    aux = [["How tall is Everest?", "What is AI?"], ["Height of Everest?", "Who is Ada?"]]
    labels = torch.tensor([1.0, 0.0])
    minilm.eval()
    with torch.no_grad():
        parts = joint([minilm.tokenize(t) for t in texts + aux], labels)
        alone_mnrl = WeightedLoss(mnrl(minilm, cfg), 1.0, "m")([minilm.tokenize(t) for t in texts], labels)
        alone_aux = WeightedLoss(auxiliary(minilm, cfg), 1.0, "a")([minilm.tokenize(t) for t in aux], labels)
    assert set(parts) == {"loss_mnrl", "loss_aux_cosine"}
    torch.testing.assert_close(parts["loss_mnrl"], alone_mnrl)
    torch.testing.assert_close(parts["loss_aux_cosine"], 2.0 * alone_aux)
    losses = build_losses(minilm, cfg, ["mnrl_triplets", "mnrl_pairs"], joint=True)
    assert isinstance(losses["mnrl_pairs"], JointLoss) and losses["mnrl_pairs"] is losses["mnrl_triplets"]


def _first_update(minilm, fixture_data, tmp_path, combine: str, weight: float) -> torch.Tensor:
    """The parameter change of one real Trainer step (clipping and AdamW included) of the given recipe."""
    from contrastive.training import build_trainer

    settings = train_settings(
        "data=fixture",
        f"loss.combine={combine}",
        f"loss.aux_weight={weight}",
        "loss.aux=cosine",  # CosineSimilarityLoss: its gradient is of MNRL's size (CoSENT's is ~10x larger)
        "loss.negatives=labeled",
        "trainer.max_steps=1",
        "trainer.warmup_ratio=0",
        "trainer.lr=1e-4",
        "batch.size=16",
        "batch.length_grouping=0",
        "tracking.enabled=false",
    )
    model = copy.deepcopy(minilm)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = build_trainer(model, settings, fixture_data, tmp_path / f"{combine}-{weight}")[0]
    trainer.train()
    return torch.cat([p.detach().flatten() for p in model.parameters()]) - before


@pytest.mark.parametrize("combine,low,high", [("joint", -1.0, 0.6), ("alternate", 0.99, 1.0 + 1e-6)])
def test_the_weight_turns_the_update_only_in_joint(minilm, fixture_data, tmp_path, combine, low, high):
    """The cosine between one step's parameter updates at aux_weight 0.1 and 3.0: clearly below 1 when both losses
    share the step (joint: 0.37 seen), ~1 when each step trains one loss (alternate: clipping + Adam cancel the
    weight; 0.994 seen, Adam's epsilon is all that tells 0.1 from 3.0)."""
    small = _first_update(minilm, fixture_data, tmp_path, combine, 0.1)
    large = _first_update(minilm, fixture_data, tmp_path, combine, 3.0)
    assert small.abs().sum() > 0 and large.abs().sum() > 0
    cosine = torch.nn.functional.cosine_similarity(small, large, dim=0).item()
    assert low <= cosine <= high, cosine
