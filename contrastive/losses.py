r"""The training objective: MNRL or GIST (InfoNCE on cosine, optional hard negatives) plus a weighted auxiliary loss.

.. math::

    \mathcal{L} = \underbrace{-\frac{1}{B}\sum_{i=1}^{B}
        \log\frac{e^{s\,\cos(a_i, p_i)}}{\sum_{j=1}^{B} e^{s\,\cos(a_i, p_j)} + \sum_{j=1}^{B} e^{s\,\cos(a_i, n_j)}}}
        _{\text{MNRL: in-batch negatives } p_{j\ne i} \text{ and hard negatives } n_j}
    \;+\; w \cdot \mathcal{L}_{\text{aux}}(q_1, q_2, y)

with scale :math:`s` (``loss.scale``), weight :math:`w` (``loss.aux_weight``) and, by default,
:math:`\mathcal{L}_{\text{aux}} = \frac{1}{B}\sum (y - \cos(q_1, q_2))^2` (CosineSimilarityLoss).

How the two terms share the optimiser steps (``loss.combine``):

- ``joint``: every row of an MNRL dataset carries one auxiliary pair (``pairs.joint_examples``), so one batch is
  an MNRL batch :math:`b` and an auxiliary batch :math:`b'` of the same size, and :class:`JointLoss` returns
  both terms; the Trainer sums them, so each step's gradient is
  :math:`\nabla\mathcal{L}_{\text{MNRL}}(b) + w\,\nabla\mathcal{L}_{\text{aux}}(b')`, summed BEFORE gradient
  clipping and AdamW. :math:`w` then sets the direction of every update. We zip the datasets rather than use
  gradient accumulation over one batch of each: accumulation would halve the steps per epoch, tie the
  learning-rate schedule to it, and the multi-dataset sampler cannot promise one batch of each per step.
- ``alternate``: the two terms train on separate datasets and the Trainer draws each batch from one of them
  (``loss.interleave``: ``proportional`` to dataset sizes, or ``round_robin``). :math:`w` multiplies every
  auxiliary batch's loss, but clipping (the gradient norm is ~10, clipped to 1) and Adam's normalisation cancel
  a weight on a whole step, so the balance is set by the auxiliary loss's share of the steps (``loss.aux_share``).

**MNRL's own knobs** (``loss.mnrl: mnrl``). With :math:`c = \cos`, the logits of anchor :math:`i` are, per
direction in ``loss.directions`` (``query_to_doc`` always; both sides are questions here):

.. math::

    \text{query\_to\_doc: } s\,c(a_i, p_j),\ s\,c(a_i, n_j) \qquad
    \text{query\_to\_query: } s\,c(a_i, a_{j\ne i}) \qquad
    \text{doc\_to\_query: } s\,c(p_i, a_j) \qquad
    \text{doc\_to\_doc: } s\,c(p_i, p_{j\ne i}),\ s\,c(p_i, n_{j\ne i})

    \mathcal{L}_{\text{MNRL}} = -\frac{1}{B}\sum_i \Big(s\,c(a_i, p_i) - \log Z_i\Big)

where :math:`\log Z_i` is the logsumexp over all directions' logits (``partition_mode: joint``) or the mean of
one logsumexp per direction (``per_direction``). ``hardness_mode`` adds :math:`\alpha\,\mathrm{sg}(c(a_i, x))`
(:math:`\alpha` = ``hardness_strength``, sg: no gradient) to the query_to_doc logit of each chosen negative
:math:`x` (in-batch, labeled hard, or all), so harder negatives weigh more in :math:`Z_i`.

**Guided in-batch negatives** (``loss.mnrl: gist | cached_gist``; GISTEmbedLoss / CachedGISTEmbedLoss).
A frozen copy :math:`g` of the untuned model scores every candidate; a candidate :math:`x \ne p_i` of anchor
:math:`i` is dropped (its logit set to :math:`-\infty`) when

.. math::

    g(a_i, x) > g(a_i, p_i) - m \quad (\text{absolute}) \qquad\text{or}\qquad
    g(a_i, x) > g(a_i, p_i) - m\,|g(a_i, p_i)| \quad (\text{relative})

(:math:`m` = ``loss.gist_margin``), i.e. a "negative" the untuned model already ranks above the labeled
positive is taken for an unlabeled duplicate rather than pushed away. The rest is MNRL's query_to_doc with
temperature :math:`\tau = 1/s` (``loss.scale``, so both kinds share one logit scale), plus, as in the GIST
paper, anchors :math:`c(a_i, a_j)` and positives :math:`c(p_i, p_j)` as further negatives
(``gist_contrast_anchors`` / ``gist_contrast_positives``), filtered the same way. The guide costs one more
forward pass per batch, without gradients.

**Distillation** (``loss.aux=margin_mse``; MarginMSELoss, Hofstätter et al. 2021). A cross-encoder teacher
:math:`t` (contrastive/teacher.py) gives each MNRL row :math:`(a, p, n_1, \dots, n_k)` its targets; the student's
cosine margins learn the teacher's:

.. math::

    \mathcal{L}_{\text{margin}} = \frac{1}{Bk}\sum_{i,j}
        \Big(\big(c(a_i, p_i) - c(a_i, n_{ij})\big) - \big(t(a_i, p_i) - t(a_i, n_{ij})\big)\Big)^2

summed with MNRL in every step (:class:`DistilledLoss`: one forward pass feeds both terms). With
``loss.aux_labels=teacher`` the pair losses above (cosine, CoSENT) take the teacher's :math:`t(q_1, q_2)` as their
label instead of the gold 0/1: soft labels.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterable
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.losses.merged_forward import embed_columns
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.util import pairwise_cos_sim
from torch import Tensor, nn

from contrastive.errors import TrainingDiverged
from contrastive.settings import LossSettings


class WeightedLoss(nn.Module):
    """`weight * inner(features, labels)`, refusing non-finite values with TrainingDiverged."""

    def __init__(self, inner: nn.Module, weight: float, name: str) -> None:
        super().__init__()
        self.inner = inner
        self.weight = float(weight)
        self.name = name
        self.model = inner.model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        value = self.inner(sentence_features, labels)
        if not torch.isfinite(value).all():
            raise TrainingDiverged(f"loss {self.name} became {value.item()} (non-finite); lower trainer.lr?")
        return self.weight * value

    def get_config_dict(self) -> dict[str, Any]:
        inner = self.inner.get_config_dict() if hasattr(self.inner, "get_config_dict") else {}
        return {"weight": self.weight, **inner}


class JointLoss(nn.Module):
    """MNRL on a row's first texts plus `weight` times the auxiliary loss on its last two (`loss.combine=joint`).

    Returns the two weighted terms as a dict: the Trainer sums them into one loss (one backward, one clip, one
    step) and logs each term beside the total.
    """

    def __init__(self, mnrl_loss: nn.Module, aux_loss: nn.Module, weight: float, aux_name: str) -> None:
        super().__init__()
        self.mnrl = WeightedLoss(mnrl_loss, 1.0, "mnrl")
        self.aux = WeightedLoss(aux_loss, weight, aux_name)
        self.model = mnrl_loss.model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> dict[str, Tensor]:
        features = list(sentence_features)
        return {
            "loss_mnrl": self.mnrl(features[:-2], labels),
            f"loss_{self.aux.name}": self.aux(features[-2:], labels),
        }

    def get_config_dict(self) -> dict[str, Any]:
        return {"mnrl": self.mnrl.get_config_dict(), self.aux.name: self.aux.get_config_dict()}


class DistilledLoss(nn.Module):
    """MNRL plus `weight` times MarginMSE on the same row's embeddings (`loss.aux=margin_mse`): the columns are
    embedded once; the row's label holds the teacher's [t(a, p), t(a, n_1), ...]."""

    def __init__(self, mnrl_loss: nn.Module, weight: float) -> None:
        super().__init__()
        self.mnrl_loss, self.weight, self.model = mnrl_loss, float(weight), mnrl_loss.model
        self.margin = st_losses.MarginMSELoss(mnrl_loss.model, similarity_fct=pairwise_cos_sim)

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> dict[str, Tensor]:
        embeddings = embed_columns(self.model, sentence_features)
        terms = {
            "loss_mnrl": self.mnrl_loss.compute_loss_from_embeddings(embeddings, labels),
            "loss_aux_margin_mse": self.weight * self.margin.compute_loss_from_embeddings(embeddings, labels),
        }
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                raise TrainingDiverged(f"loss {name} became {value.item()} (non-finite); lower trainer.lr?")
        return terms

    def get_config_dict(self) -> dict[str, Any]:
        return {"mnrl": self.mnrl_loss.get_config_dict(), "margin_mse": {"weight": self.weight}}


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    """`train()` of a frozen guide: always eval mode (no dropout), whatever the caller asks."""
    return nn.Module.train(self, False)


def frozen_copy(model: SentenceTransformer) -> SentenceTransformer:
    """A frozen copy of `model` as it is now (GIST's guide: the untuned model): eval mode kept, no gradients."""
    guide = copy.deepcopy(model)
    guide.requires_grad_(False)
    guide.train = types.MethodType(_stay_in_eval, guide)
    return guide.eval()


def gather_negatives(cfg: LossSettings) -> bool:
    """`loss.gather_across_devices`, its null resolved: true when more than one process trains (DDP)."""
    from contrastive.distributed import world_size

    if cfg.gather_across_devices is None:
        return world_size() > 1
    return bool(cfg.gather_across_devices)


def mnrl(model: SentenceTransformer, cfg: LossSettings, guide: SentenceTransformer | None = None) -> nn.Module:
    """The in-batch-negative loss of `loss.mnrl`: MultipleNegativesRankingLoss (cached when `loss.cached`) with
    its directions / partition / hardness knobs, or GISTEmbedLoss / CachedGISTEmbedLoss guided by `guide`."""
    gather = gather_negatives(cfg)
    if cfg.gist:
        if guide is None:
            raise ValueError(f"loss.mnrl={cfg.mnrl} needs a guide model (contrastive.losses.frozen_copy)")
        gist = {
            "temperature": 1.0 / float(cfg.scale),
            "margin_strategy": cfg.gist_margin_strategy,
            "margin": float(cfg.gist_margin),
            "contrast_anchors": bool(cfg.gist_contrast_anchors),
            "contrast_positives": bool(cfg.gist_contrast_positives),
            "gather_across_devices": gather,
        }
        if cfg.mnrl == "cached_gist":
            return st_losses.CachedGISTEmbedLoss(model, guide, mini_batch_size=int(cfg.mini_batch_size), **gist)
        return st_losses.GISTEmbedLoss(model, guide, **gist)
    knobs = {
        "directions": cfg.direction_names,
        "partition_mode": cfg.partition_mode,
        "hardness_mode": cfg.hardness_mode,
        "hardness_strength": float(cfg.hardness_strength),
        "gather_across_devices": gather,
    }
    if cfg.cached:
        return st_losses.CachedMultipleNegativesRankingLoss(
            model, scale=float(cfg.scale), mini_batch_size=int(cfg.mini_batch_size), **knobs
        )
    return st_losses.MultipleNegativesRankingLoss(model, scale=float(cfg.scale), **knobs)


def auxiliary(model: SentenceTransformer, cfg: LossSettings) -> nn.Module:
    """The auxiliary pair loss on the binary label (`loss.aux`)."""
    kind = cfg.aux
    if kind == "cosine":
        return st_losses.CosineSimilarityLoss(model)
    if kind == "cosent":
        return st_losses.CoSENTLoss(model)
    if kind == "online_contrastive":
        return st_losses.OnlineContrastiveLoss(model, margin=float(cfg.aux_margin))
    if kind == "margin_mse":
        raise ValueError("loss.aux=margin_mse is built with MNRL (DistilledLoss), not as a pair loss")
    raise ValueError(f"no auxiliary loss {kind!r} (settings.LossSettings checks loss.aux)")


def build_losses(
    model: SentenceTransformer,
    cfg: LossSettings,
    datasets: Iterable[str],
    guide: SentenceTransformer | None = None,
    joint: bool = False,
) -> dict[str, nn.Module]:
    """One loss per training dataset: MNRL (or GIST, guided by `guide`) for mnrl_* datasets (with `joint`, plus the
    weighted auxiliary loss on the auxiliary pair zipped onto each row), the weighted auxiliary loss for aux_pairs."""
    weight = float(cfg.aux_weight)
    if cfg.aux == "margin_mse":  # settings: joint, plain MNRL; rows without negatives train MNRL alone
        shared_mnrl = mnrl(model, cfg, guide)
        distilled = DistilledLoss(shared_mnrl, weight)
        plain = WeightedLoss(shared_mnrl, 1.0, cfg.mnrl)
        return {name: plain if name == "mnrl_pairs" else distilled for name in datasets}
    if joint:
        shared = JointLoss(mnrl(model, cfg, guide), auxiliary(model, cfg), weight, f"aux_{cfg.aux}")
        return {name: shared for name in datasets}
    shared_mnrl = WeightedLoss(mnrl(model, cfg, guide), 1.0, cfg.mnrl)
    out: dict[str, nn.Module] = {}
    for name in datasets:
        if name.startswith("mnrl"):
            out[name] = shared_mnrl
        elif name == "aux_pairs":
            out[name] = WeightedLoss(auxiliary(model, cfg), weight, f"aux_{cfg.aux}")
        else:
            raise ValueError(f"no loss for dataset {name!r}")
    return out
