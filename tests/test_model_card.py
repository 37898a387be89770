"""The model card data filled from a run (contrastive.model_card), without training: the evaluation table's columns,
the model-index metadata, the losses in words and the datasets' names."""

from __future__ import annotations

from types import SimpleNamespace

from sentence_transformers import SentenceTransformerModelCardData

from contrastive.model_card import describe_datasets, evaluation_columns, index_fine_tuned_only
from contrastive.settings import LossSettings


def _result():
    ft = {"mrr_at_10": 0.8, "pair_ap": 0.7, "n_queries": 48}
    base = {"mrr_at_10": 0.75, "pair_ap": 0.72, "n_queries": 48}
    delta = {"mrr_at_10": {"delta": 0.05, "ci_low": 0.01, "ci_high": 0.09}, "pair_ap": None}
    objective = {"name": "mrr_at_10", "value": 0.8}
    return SimpleNamespace(
        finetuned=ft, baseline=base, delta=delta, split="val", objective=objective, n_boot=50, ci=0.9
    )


def test_evaluation_table_beside_the_baseline_and_index_of_the_fine_tuned_model_only():
    card = SentenceTransformerModelCardData(local_files_only=True)
    card.model_name = "m"
    card.eval_results_dict = evaluation_columns(_result(), "sentence-transformers/all-MiniLM-L6-v2", "abc")
    index_fine_tuned_only(card, "val")
    out = card.format_eval_metrics()
    (table,) = [m["table"] for m in out["eval_metrics"]]
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["Metric", "fine-tuned", "baseline", "delta [90% CI]"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == [
        "**mrr_at_10**",
        "**0.8000**",
        "**0.7500**",
        "**+0.0500 [+0.0100, +0.0900]**",
    ]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["pair_ap", "0.7000", "0.7200", "n/a"]
    assert "n_queries" not in table
    (entry,) = out["model-index"]
    (result,) = entry["results"]  # the baseline and the deltas are not this model's results
    assert result["dataset"] == {"name": "QQP val split", "type": "qqp", "split": "val"}
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"mrr_at_10": 0.8, "pair_ap": 0.7}


def test_datasets_named_as_qqp_and_losses_in_words():
    loss = LossSettings(aux="online_contrastive", aux_weight=0.2, hard_negatives=False, scale=30.0)
    datasets = [{"name": "mnrl_pairs", "loss": {"fullname": "contrastive.losses.WeightedLoss"}}, {"name": "aux_pairs"}]
    describe_datasets(datasets, loss, SimpleNamespace(fingerprint="f00d"))
    assert datasets[0]["name"] == "QQP duplicate pairs: question and its duplicate (data fingerprint f00d)"
    assert datasets[0]["loss"]["fullname"].endswith(".losses.MultipleNegativesRankingLoss")
    assert "scale: 30.0" in datasets[0]["loss"]["config_code"]
    assert "hard negatives" not in datasets[0]["loss"]["config_code"]
    assert datasets[1]["loss"]["fullname"].endswith(".losses.OnlineContrastiveLoss")
    words = datasets[1]["loss"]["config_code"]
    assert "auxiliary loss: online_contrastive on the duplicate label, margin 0.5" in words
    assert "aux_weight: 0.2" in words


def _mnrl_words(**loss) -> tuple[str, str]:
    datasets = [{"name": "mnrl_triplets"}]
    describe_datasets(datasets, LossSettings(**loss), SimpleNamespace(fingerprint="f00d"))
    return datasets[0]["loss"]["fullname"], datasets[0]["loss"]["config_code"]


def test_the_mnrl_kind_and_its_knobs_in_words():
    name, words = _mnrl_words()
    assert name.endswith(".losses.MultipleNegativesRankingLoss")
    assert "directions" not in words and "hardness" not in words and "guide" not in words  # defaults: as before
    name, words = _mnrl_words(
        directions="query_to_doc+doc_to_query", hardness_mode="all_negatives", hardness_strength=5
    )
    assert "directions: query_to_doc, doc_to_query (partition: joint)" in words
    assert "hardness: all_negatives, strength 5" in words
    name, words = _mnrl_words(mnrl="gist", gist_margin=0.05, scale=25.0)
    assert name.endswith(".losses.GISTEmbedLoss")
    assert "temperature: 0.04 (1 / loss.scale 25.0)" in words
    assert "guide: a frozen copy of the untuned base model" in words and "(absolute 0.05)" in words
    name, words = _mnrl_words(mnrl="cached_gist", mini_batch_size=16)
    assert name.endswith(".losses.CachedGISTEmbedLoss") and "mini-batches of 16" in words


def test_mined_negatives_in_words():
    loss = LossSettings(negatives="both", combine="alternate")
    datasets = [{"name": n} for n in ("mnrl_both", "mnrl_mined", "mnrl_triplets", "mnrl_pairs")]
    describe_datasets(datasets, loss, SimpleNamespace(fingerprint="f00d"))
    words = [d["loss"]["config_code"] for d in datasets]
    assert "one labelled non-duplicate and 1 mined by the untuned model" in words[0]
    assert "plus 1 mined by the untuned model" in words[1] and "labelled" not in words[1]
    assert "one labelled non-duplicate per anchor" in words[2] and "hard negatives" not in words[3]
    assert datasets[1]["name"].startswith("QQP mined triplets")
