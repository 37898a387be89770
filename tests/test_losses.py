"""The loss combination: weighting, aux_weight=0, non-finite guard, loss selection."""

from __future__ import annotations

import pytest
import torch
from conftest import train_settings
from torch import nn

from contrastive.errors import ConfigError, TrainingDiverged
from contrastive.losses import WeightedLoss, auxiliary, build_losses, frozen_copy, mnrl


def loss_settings(*overrides: str):
    """conf/loss/mnrl_cosine.yaml, composed and checked, with a small cached mini-batch."""
    return train_settings("loss.mini_batch_size=4", *(f"loss.{o}" for o in overrides)).loss


LOSS_CFG = loss_settings()


def _features(model, texts):
    return model.tokenize(texts)


def _aux_grad(model, weight: float) -> torch.Tensor:
    """Gradient of weight * CosineSimilarityLoss w.r.t. the first attention weights, in eval mode."""
    model.eval()
    model.zero_grad()
    loss = WeightedLoss(auxiliary(model, LOSS_CFG), weight, "aux")
    a = _features(model, ["How do I learn Python?", "Is the earth flat?"])
    b = _features(model, ["What is the best way to learn Python?", "How tall is Everest?"])
    value = loss([a, b], torch.tensor([1.0, 0.0]))
    value.backward()
    param = next(p for n, p in model.named_parameters() if "attention.self.query.weight" in n)
    return param.grad.detach().clone()


def test_aux_gradient_scales_linearly_with_weight(minilm):
    base = _aux_grad(minilm, 1.0)
    assert base.abs().sum() > 0
    for weight in (0.25, 0.5, 2.0):
        torch.testing.assert_close(_aux_grad(minilm, weight), weight * base, rtol=1e-4, atol=1e-9)
    assert _aux_grad(minilm, 0.0).abs().sum() == 0
    minilm.zero_grad()


def test_build_losses_maps_datasets(minilm):
    losses = build_losses(minilm, LOSS_CFG, ["mnrl_triplets", "mnrl_pairs", "aux_pairs"])
    assert losses["mnrl_triplets"] is losses["mnrl_pairs"]  # one MNRL serves pairs and triplets
    assert losses["aux_pairs"].weight == pytest.approx(0.3)
    assert type(losses["aux_pairs"].inner).__name__ == "CosineSimilarityLoss"
    only_mnrl = build_losses(minilm, loss_settings("aux_weight=0"), ["mnrl_pairs"])
    assert set(only_mnrl) == {"mnrl_pairs"}


@pytest.mark.parametrize(
    ("aux", "cls"),
    [("cosine", "CosineSimilarityLoss"), ("cosent", "CoSENTLoss"), ("online_contrastive", "OnlineContrastiveLoss")],
)
def test_aux_choice(minilm, aux, cls):
    assert type(auxiliary(minilm, loss_settings(f"aux={aux}"))).__name__ == cls


def test_cached_mnrl_selected(minilm):
    losses = build_losses(minilm, loss_settings("cached=true"), ["mnrl_pairs"])
    assert type(losses["mnrl_pairs"].inner).__name__ == "CachedMultipleNegativesRankingLoss"
    assert losses["mnrl_pairs"].inner.mini_batch_size == 4


def test_bad_options_rejected_by_the_settings():
    with pytest.raises(ConfigError, match="loss.aux='mse'"):
        loss_settings("aux=mse")
    with pytest.raises(ConfigError, match="loss.aux_weight"):
        loss_settings("aux_weight=-0.1")
    with pytest.raises(ConfigError, match="loss.aux_weight=inf"):
        loss_settings("aux_weight=inf")


class _Constant(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.model = None

    def forward(self, features, labels):
        return torch.tensor(self.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_raises(value):
    with pytest.raises(TrainingDiverged, match="non-finite"):
        WeightedLoss(_Constant(value), 1.0, "mnrl")([], torch.tensor([]))


def test_weighted_loss_multiplies():
    assert WeightedLoss(_Constant(2.0), 0.3, "aux")([], torch.tensor([])).item() == pytest.approx(0.6)


# ---------------------------------------------------------------- loss.mnrl kinds and MNRL's own knobs
ANCHORS = ["How do I learn Python quickly?", "What is the capital of France?", "Why is the sky blue?"]
POSITIVES = [
    "What is the fastest way to learn Python?",
    "Which city is the capital of France?",
    "Why does the sky look blue?",
]


def _student(model):
    """A copy of the session's model to compute losses with (eval mode: no dropout) or to train."""
    import copy

    return copy.deepcopy(model).eval()


def _value(loss, model, anchors, positives) -> float:
    with torch.no_grad():
        return loss([model.preprocess(anchors), model.preprocess(positives)], torch.tensor([])).item()


def test_mnrl_knobs_reach_both_mnrl_classes(minilm):
    default = mnrl(minilm, LOSS_CFG)
    assert type(default).__name__ == "MultipleNegativesRankingLoss"
    assert (default.directions, default.partition_mode, default.hardness_mode, default.hardness_strength) == (
        ("query_to_doc",),
        "joint",
        None,
        0.0,
    )
    knobs = ("directions=query_to_doc+doc_to_query", "partition_mode=per_direction")
    hard = ("hardness_mode=in_batch_negatives", "hardness_strength=9")
    for cached, cls in ((False, "MultipleNegativesRankingLoss"), (True, "CachedMultipleNegativesRankingLoss")):
        loss = mnrl(minilm, loss_settings(f"cached={cached}", *knobs, *hard))
        assert type(loss).__name__ == cls and loss.scale == 20.0
        assert loss.directions == ("query_to_doc", "doc_to_query") and loss.partition_mode == "per_direction"
        assert (loss.hardness_mode, loss.hardness_strength) == ("in_batch_negatives", 9.0)
    model = _student(minilm)
    four = "directions=[query_to_doc,query_to_query,doc_to_query,doc_to_doc]"
    plain, gte = (_value(mnrl(model, loss_settings(*o)), model, ANCHORS, POSITIVES) for o in ((), (four,)))
    assert gte > plain  # more directions: more negatives in the softmax


def test_gist_kinds_are_built_with_the_guide_and_temperature_one_over_scale(minilm):
    guide = frozen_copy(minilm)
    loss = mnrl(
        minilm, loss_settings("mnrl=gist", "scale=25", "gist_margin_strategy=relative", "gist_margin=0.1"), guide
    )
    assert type(loss).__name__ == "GISTEmbedLoss" and loss.guide is guide and loss.model is minilm
    assert loss.temperature == pytest.approx(1 / 25)
    assert (loss.margin_strategy, loss.margin, loss.contrast_anchors, loss.contrast_positives) == (
        "relative",
        0.1,
        True,
        True,
    )
    cached = mnrl(minilm, loss_settings("mnrl=cached_gist", "gist_contrast_anchors=false"), guide)
    assert type(cached).__name__ == "CachedGISTEmbedLoss" and cached.guide is guide
    assert cached.mini_batch_size == 4 and cached.temperature == pytest.approx(1 / 20)
    assert (cached.contrast_anchors, cached.contrast_positives) == (False, True)
    shared = build_losses(minilm, loss_settings("mnrl=gist"), ["mnrl_triplets", "mnrl_pairs"], guide)
    assert shared["mnrl_triplets"] is shared["mnrl_pairs"] and shared["mnrl_pairs"].inner.guide is guide
    with pytest.raises(ValueError, match="needs a guide"):
        mnrl(minilm, loss_settings("mnrl=gist"))


def test_the_guide_is_a_frozen_copy_in_eval_mode(minilm):
    guide = frozen_copy(minilm)
    params = dict(guide.named_parameters())
    assert params and not any(p.requires_grad for p in params.values())
    for name, p in minilm.named_parameters():
        assert p.data_ptr() != params[name].data_ptr() and torch.equal(p, params[name])
    loss = mnrl(minilm, loss_settings("mnrl=gist"), guide)
    loss.train()  # e.g. a wrapper put in training mode: the guide keeps its dropout off
    assert not guide.training and not any(m.training for m in guide.modules())
    loss.eval()


GIST_PLAIN = ("mnrl=gist", "gist_contrast_anchors=false", "gist_contrast_positives=false")


def test_gist_drops_the_negative_the_guide_scores_above_the_positive(minilm):
    """Without false negatives GIST equals MNRL; an in-batch 'negative' that duplicates the anchor (the guide
    scores it 1.0, above the positive) is dropped from the anchor's softmax, and only that one."""
    model = _student(minilm)
    guide = frozen_copy(minilm)
    plain, gist = mnrl(model, loss_settings()), mnrl(model, loss_settings(*GIST_PLAIN), guide)
    assert _value(gist, model, ANCHORS, POSITIVES) == pytest.approx(_value(plain, model, ANCHORS, POSITIVES), abs=1e-6)

    anchors = [ANCHORS[0], "How can I learn Python quickly?", ANCHORS[2]]
    positives = [POSITIVES[0], ANCHORS[0], POSITIVES[2]]  # row 1's positive is row 0's anchor, verbatim
    with torch.no_grad():
        a = model.encode(anchors, convert_to_tensor=True, normalize_embeddings=True)
        p = model.encode(positives, convert_to_tensor=True, normalize_embeddings=True)
    cos = a @ p.T  # the guide's scores too: it is a copy of the same weights
    false_negatives = (cos > cos.diagonal().view(-1, 1)).nonzero().tolist()
    assert false_negatives == [[0, 1]]  # the anchor's own duplicate, and nothing else
    logits = 20.0 * cos
    masked = logits.clone()
    masked[0, 1] = -torch.inf
    expected = lambda s: (torch.logsumexp(s, dim=1) - s.diagonal()).mean().item()  # noqa: E731
    mnrl_value, gist_value = _value(plain, model, anchors, positives), _value(gist, model, anchors, positives)
    assert mnrl_value == pytest.approx(expected(logits), abs=1e-5)
    assert gist_value == pytest.approx(expected(masked), abs=1e-5)
    assert gist_value < mnrl_value - 0.1  # the duplicate scored ~1.0: MNRL pushed the anchor from itself
    cached = mnrl(model, loss_settings(*GIST_PLAIN[1:], "mnrl=cached_gist"), guide)
    assert _value(cached, model, anchors, positives) == pytest.approx(gist_value, abs=1e-5)


def test_a_training_step_moves_the_model_not_the_guide(minilm, fixture_data, tmp_path):
    """build_trainer builds the guide for a gist kind only (a frozen copy of the untuned model), and one optimiser
    step changes the trained model while the guide keeps the starting weights."""
    from contrastive.training import build_trainer

    start = {n: p.detach().clone() for n, p in minilm.named_parameters()}
    fast = ("data=fixture", "tracking.enabled=false", "trainer.max_steps=1", "trainer.warmup_ratio=0")
    fast += ("batch.size=8", "loss.aux_weight=0")  # one dataset: trainer.loss is the MNRL / GIST loss
    model = _student(minilm)
    trainer, *_ = build_trainer(model, train_settings(*fast), fixture_data, tmp_path / "mnrl")
    assert not hasattr(trainer.loss.inner, "guide")
    model = _student(minilm)
    trainer, *_ = build_trainer(model, train_settings(*fast, "loss.mnrl=gist"), fixture_data, tmp_path / "gist")
    guide = trainer.loss.inner.guide
    assert guide is not model and type(trainer.loss.inner).__name__ == "GISTEmbedLoss"
    trainer.train()
    assert trainer.state.global_step == 1
    moved = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), start[n])]
    assert moved  # the student trained
    assert all(torch.equal(p, start[n]) for n, p in guide.named_parameters())  # the guide did not
    assert not guide.training


# ---------------------------------------------------------------- distillation (loss.aux=margin_mse)
def test_margin_mse_distillation_is_mnrl_plus_the_weighted_margin_loss_on_one_forward_pass(minilm):
    from sentence_transformers.sentence_transformer import losses as st_losses
    from sentence_transformers.util import pairwise_cos_sim

    from contrastive.losses import DistilledLoss

    cfg = loss_settings("aux=margin_mse", "aux_labels=teacher", "aux_weight=0.5")
    built = build_losses(minilm, cfg, ["mnrl_mined", "mnrl_pairs"], joint=True)
    assert isinstance(built["mnrl_mined"], DistilledLoss) and isinstance(built["mnrl_pairs"], WeightedLoss)
    minilm.eval()
    a = _features(minilm, ["How do I learn Python?", "Is the earth flat?"])
    p = _features(minilm, ["What is the best way to learn Python?", "Is the earth round?"])
    n = _features(minilm, ["How do I learn Java?", "How tall is Everest?"])
    teacher = torch.tensor([[0.9, 0.2], [0.8, 0.1]])  # [t(a, p), t(a, n)] per row
    with torch.no_grad():
        terms = built["mnrl_mined"]([a, p, n], teacher)
        plain_mnrl = built["mnrl_pairs"].inner([a, p, n], teacher)
        margin = st_losses.MarginMSELoss(minilm, similarity_fct=pairwise_cos_sim)([a, p, n], teacher)
    assert set(terms) == {"loss_mnrl", "loss_aux_margin_mse"}
    assert torch.allclose(terms["loss_mnrl"], plain_mnrl, atol=1e-5)
    assert torch.allclose(terms["loss_aux_margin_mse"], 0.5 * margin, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("aux=margin_mse", "aux_labels=teacher", "combine=alternate"), "loss.combine"),
        (("aux=margin_mse", "aux_labels=teacher", "hard_negatives=false"), "loss.hard_negatives"),
        (("aux=margin_mse", "aux_labels=teacher", "mnrl=gist"), "loss.mnrl"),
        (("aux_labels=silver",), "loss.aux_labels"),
    ],
)
def test_distillation_settings_that_cannot_work_are_refused(overrides, key):
    with pytest.raises(ConfigError) as err:
        loss_settings(*overrides)
    assert str(err.value).startswith(f"{key}=") and "\n" not in str(err.value)
