"""The checkpoint's model card: fill sentence-transformers' model card data (`model.model_card_data`) from the run,
so the README.md that `model.save` writes names the base model, QQP with the data fingerprint, the losses and
their settings in words, and the evaluation table beside the baseline.

The Trainer's model card callback has already filled the training datasets (columns, statistics, examples) and
hyperparameters; this module renames and describes what it could not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from contrastive.data import PreparedData
from contrastive.evaluation.metrics import COUNT_KEYS
from contrastive.settings import LossSettings, ModelSettings
from contrastive.utils import fmt_delta, fmt_metric

FINE_TUNED = "fine-tuned"
EVAL_TASK = "Duplicate Question Retrieval"
TASK = "duplicate-question search and deduplication (semantic search, paraphrase mining)"
DATASET_WORDS = {  # the Trainer's dataset names (contrastive.pairs) in words
    "mnrl_triplets": "QQP triplets: question, its duplicate, a labelled non-duplicate",
    "mnrl_pairs": "QQP duplicate pairs: question and its duplicate",
    "mnrl_mined": "QQP mined triplets: question, its duplicate, non-duplicates mined by the untuned model",
    "mnrl_both": "QQP triplets: question, its duplicate, a labelled non-duplicate and mined non-duplicates",
    "aux_pairs": "QQP labelled pairs: two questions and the duplicate label",
}
LICENSE = "apache-2.0"  # the base model's (sentence-transformers/all-MiniLM-L6-v2)
NOT_METRICS = ("pair_threshold",)  # a setting the evaluation found (the best-F1 cut-off), not a score
QQP_HUB_ID = "nyu-mll/glue"  # GLUE's QQP (config qqp): data.source=hub's, and the source of the shared file
AUX_LOSSES = {"cosine": "CosineSimilarityLoss", "cosent": "CoSENTLoss", "online_contrastive": "OnlineContrastiveLoss"}
ST_LOSSES = "sentence_transformers.sentence_transformer.losses."


class Evaluator:
    """One column of the card's evaluation table, in the shape sentence-transformers' card reads from evaluators."""

    def __init__(self, name: str, description: str, primary_metric: str | None, config: dict[str, Any]) -> None:
        self.name, self.description, self.primary_metric, self.config = name, description, primary_metric, config

    def get_config_dict(self) -> dict[str, Any]:
        return self.config


Evaluator.__module__ = "contrastive.evaluation"  # the card says "Evaluated with contrastive.evaluation.Evaluator"


def hard_negative_words(dataset: str, loss: LossSettings) -> str:
    """What a dataset's explicit negatives are, in words ('' when it has none)."""
    mined = f"{loss.mining.num_negatives} mined by the untuned model (component-aware, contrastive.mining)"
    return (
        {
            "mnrl_triplets": ", plus one labelled non-duplicate per anchor (hard negatives)",
            "mnrl_mined": f", plus {mined} per anchor (hard negatives)",
            "mnrl_both": f", plus one labelled non-duplicate and {mined} per anchor (hard negatives)",
        }.get(dataset, "")
        if loss.hard_negatives
        else ""
    )


def mnrl_words(loss: LossSettings, dataset: str) -> tuple[str, list[str]]:
    """(the in-batch-negative loss's class name, its settings in words) for one MNRL dataset: MNRL or GIST
    (`loss.mnrl`)."""
    negatives = "negatives: the other positives in the batch" + hard_negative_words(dataset, loss)
    if loss.gist:
        name = "CachedGISTEmbedLoss" if loss.mnrl == "cached_gist" else "GISTEmbedLoss"
        words = [
            f"temperature: {1 / loss.scale:g} (1 / loss.scale {loss.scale})",
            negatives,
            "guide: a frozen copy of the untuned base model; a negative it scores above the positive"
            + (f" minus the margin ({loss.gist_margin_strategy} {loss.gist_margin})" if loss.gist_margin else "")
            + " is dropped (a likely unlabelled duplicate)",
            f"contrast anchors: {loss.gist_contrast_anchors}, contrast positives: {loss.gist_contrast_positives}",
        ]
    else:
        name = "CachedMultipleNegativesRankingLoss" if loss.cached else "MultipleNegativesRankingLoss"
        words = [f"scale: {loss.scale} (inverse temperature on cosine similarities)", negatives]
        if loss.direction_names != ("query_to_doc",) or loss.partition_mode != "joint":
            words.append(f"directions: {', '.join(loss.direction_names)} (partition: {loss.partition_mode})")
        if loss.hardness_mode is not None and loss.hardness_strength > 0:
            words.append(f"hardness: {loss.hardness_mode}, strength {loss.hardness_strength}")
    words.append("weight: 1.0")
    if loss.cached or loss.mnrl == "cached_gist":
        words.append(f"cached (GradCache): forward/backward in mini-batches of {loss.mini_batch_size}")
    return name, words


def loss_words(dataset: str, loss: LossSettings) -> tuple[str, list[str]]:
    """(the sentence-transformers loss's full name, its settings in words) for one training dataset."""
    if dataset.startswith("mnrl"):
        name, words = mnrl_words(loss, dataset)
        if loss.combine == "joint" and loss.aux_weight > 0:
            words.append(
                f"plus aux_weight {loss.aux_weight} x {loss.aux} on a labelled pair zipped onto each row: both "
                "losses in every optimiser step (combine: joint)"
            )
        return ST_LOSSES + name, words
    words = [
        f"auxiliary loss: {loss.aux} on the duplicate label"
        + (f", margin {loss.aux_margin}" if loss.aux == "online_contrastive" else ""),
        f"aux_weight: {loss.aux_weight} (multiplies every auxiliary batch's loss)",
        f"aux_share: {loss.aux_share} of the labelled train pairs",
    ]
    return ST_LOSSES + AUX_LOSSES.get(loss.aux, loss.aux), words


def describe_datasets(datasets: list[dict[str, Any]], loss: LossSettings, data: PreparedData) -> None:
    """Rename the Trainer's datasets (mnrl_triplets, aux_pairs) as QQP parts and describe their losses in words."""
    for info in datasets:
        raw = str(info.get("name", ""))
        info["name"] = f"{DATASET_WORDS.get(raw, 'QQP ' + raw)} (data fingerprint {data.fingerprint})"
        fullname, words = loss_words(raw, loss)
        if loss.combine == "alternate":
            words.append(f"interleave: {loss.interleave} (how the datasets' batches alternate)")
        info["loss"] = {"fullname": fullname, "config_code": "\n".join(f"  - {w}" for w in words)}


def evaluation_columns(result: Any, base_model: str, fingerprint: str) -> dict[Evaluator, dict[str, Any]]:
    """fine-tuned | baseline | delta [CI] per metric, as the card's grouped evaluation table."""
    ft, base, delta = result.finetuned, result.baseline, result.delta or {}
    names = [n for n in ft if n not in COUNT_KEYS and n not in NOT_METRICS]
    config = {"split": result.split, **{n[2:]: int(ft[n]) for n in COUNT_KEYS if n in ft}}
    config |= {"data_fingerprint": fingerprint, "baseline": base_model, "bootstrap": result.n_boot, "ci": result.ci}
    primary = result.objective.get("name") if isinstance(result.objective.get("name"), str) else None
    columns = {Evaluator(FINE_TUNED, EVAL_TASK, primary, config): {n: fmt_metric(ft[n]) for n in names}}
    if base is not None:
        columns[Evaluator("baseline", EVAL_TASK, primary, config)] = {n: fmt_metric(base.get(n)) for n in names}
        label = f"delta [{result.ci:.0%} CI]"
        columns[Evaluator(label, EVAL_TASK, primary, config)] = {n: fmt_delta(delta.get(n)) for n in names}
    return columns


def index_fine_tuned_only(card: Any, split: str) -> None:
    """Keep the card's model-index metadata to the fine-tuned column (the baseline and deltas are not this model's),
    with QQP as its dataset."""
    formatter = type(card).format_eval_metrics

    def format_eval_metrics() -> dict[str, Any]:
        out = formatter(card)
        for entry in out.get("model-index") or []:
            results = [r for r in entry.get("results", []) if r.get("dataset", {}).get("type") == FINE_TUNED]
            for r in results:
                r["dataset"] = {"name": f"QQP {split} split", "type": "qqp", "split": split}
            entry["results"] = results
        return out

    card.format_eval_metrics = format_eval_metrics


def name_datasets(datasets: list[dict[str, Any]], names: Sequence[str]) -> None:
    """Give a lone unnamed training dataset its name: the Trainer gets one dataset without its name (e.g. mnrl_mined
    under the joint recipe), and the card would say `QQP None`."""
    if len(datasets) == 1 and len(names) == 1 and str(datasets[0].get("name") or "None") == "None":
        datasets[0]["name"] = names[0]


def library_losses(losses: Sequence[Any]) -> list[Any]:
    """The sentence-transformers losses inside the training losses (contrastive.losses' wrappers unwrapped), whose
    `citation` the card's BibTeX section lists, as the library does for the losses it is handed."""
    found: dict[int, Any] = {}
    for loss in losses:
        for module in loss.modules():
            if type(module).__module__.startswith("sentence_transformers") and hasattr(type(module), "citation"):
                found.setdefault(id(module), module)
    return list(found.values())


def clean_widget(card: Any) -> None:
    """The widget's examples without repeats: each candidate once, never the source sentence itself."""
    for entry in card.widget:
        if "source_sentence" in entry:
            source = entry["source_sentence"]
            entry["sentences"] = [s for s in dict.fromkeys(entry.get("sentences", [])) if s != source]
    card.widget = [e for e in card.widget if "source_sentence" not in e or e["sentences"]]


def fill_model_card(
    model: Any,
    model_cfg: ModelSettings,
    loss: LossSettings,
    data: PreparedData,
    result: Any,
    dataset_names: Sequence[str] = (),
    losses: Sequence[Any] = (),
    model_id: str | None = None,
) -> None:
    """Fill `model.model_card_data` from the run (call after training, before saving); `dataset_names`: the
    training datasets the Trainer got (contrastive.training.fit's `datasets`), `losses` its losses (their
    citations), `model_id` what the usage snippet loads (the saved checkpoint's path)."""
    card = model.model_card_data
    card.license = LICENSE
    card.datasets = [QQP_HUB_ID]  # front matter `datasets:`
    if model_id:
        card.model_id = model_id  # the usage snippet's SentenceTransformer("...") instead of a placeholder
    if losses:
        card.set_losses(library_losses(losses))
    clean_widget(card)
    name_datasets(card.train_datasets, dataset_names)
    base = str(model_cfg.name_or_path)
    card.local_files_only = True  # no Hub look-ups while saving
    if not Path(base).exists():  # a Hub id: the card links it
        card.base_model = base
    card.model_name = f"{Path(base).name} fine-tuned on QQP duplicate questions"
    alpha = getattr(model_cfg, "interpolate", None)
    if alpha is not None:  # WiSE-FT: the saved weights are a mix of the base model's and the fine-tuned ones
        card.model_name += f", weights {1 - alpha:g}·base + {alpha:g}·fine-tuned (WiSE-FT)"
        card.add_tags([f"wise-ft:{alpha:g}"])
    card.task_name = TASK
    card.set_language("en")
    losses = {loss_words(str(info.get("name", "")), loss)[0] for info in card.train_datasets}
    if loss.combine == "joint" and loss.aux_weight > 0:  # the auxiliary loss rides on the MNRL rows
        losses.add(loss_words("aux_pairs", loss)[0])
    wrappers = ("loss:WeightedLoss", "loss:JointLoss")  # contrastive.losses' wrappers: name what they wrap
    card.tags = [t for t in card.tags if t not in wrappers]
    card.add_tags(sorted(f"loss:{name.rsplit('.', 1)[-1]}" for name in losses))
    card.add_tags(["qqp", "duplicate-questions", f"data-fingerprint:{data.fingerprint}"])
    describe_datasets(card.train_datasets, loss, data)
    card.eval_results_dict = evaluation_columns(result, base, data.fingerprint)
    index_fine_tuned_only(card, result.split)
