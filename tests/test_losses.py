"""The loss combination: weighting, aux_weight=0, non-finite guard, loss selection."""

from __future__ import annotations

import pytest
import torch
from conftest import train_settings
from torch import nn

from contrastive.errors import ConfigError, TrainingDiverged
from contrastive.losses import WeightedLoss, auxiliary, build_losses


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
