"""Training examples from split pairs: positives, hard-negative triplets (labeled and/or mined), labeled pairs, the
auxiliary sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from contrastive.data import components, question_key
from contrastive.errors import DataError
from contrastive.utils import seeded_hash


def _rank(values: Sequence[str], seed: int) -> np.ndarray:
    """A seeded, order-independent pseudo-random rank for each string."""
    return np.array([seeded_hash(v, seed) for v in values], dtype=np.uint64)


def cap_pairs(frame: pd.DataFrame, max_pairs: int | None, seed: int = 0) -> pd.DataFrame:
    """Keep at most `max_pairs` rows, taking whole groups of linked pairs in a seeded hash order.

    A group is a connected component of all labeled pairs, so a capped set keeps duplicate chains and the
    labeled non-duplicates of their members together (hard-negative triplets survive the cap). The same
    rows are chosen whatever the input order.
    """
    if not max_pairs or len(frame) <= max_pairs:
        return frame
    group_of = components(frame, labels=(0, 1))
    group = frame["key1"].map(group_of).to_numpy()
    first_key: dict[int, str] = {}
    for key, g in group_of.items():
        first_key[g] = min(first_key.get(g, key), key)
    group_rank = dict(zip(first_key, _rank(list(first_key.values()), seed)))
    row_ids = (frame["key1"] + "\0" + frame["key2"] + "\0" + frame["label"].astype(str)).tolist()
    order = sorted(range(len(frame)), key=lambda i: (group_rank[group[i]], row_ids[i]))
    keep = np.sort(np.array(order[: int(max_pairs)]))
    return frame.iloc[keep].reset_index(drop=True)


def positives(frame: pd.DataFrame, both_orders: bool = False) -> pd.DataFrame:
    """(anchor, positive) from label=1 pairs; with `both_orders` also (positive, anchor)."""
    dup = frame[frame["label"] == 1]
    out = pd.DataFrame(
        {"anchor": dup["question1"].astype(str), "positive": dup["question2"].astype(str), "comp": dup["comp1"]}
    )
    if both_orders:
        rev = pd.DataFrame({"anchor": out["positive"], "positive": out["anchor"], "comp": out["comp"]})
        out = pd.concat([out, rev], ignore_index=True)
    return out.reset_index(drop=True)


def negatives_by_component(frame: pd.DataFrame) -> dict[int, list[str]]:
    """For each duplicate component, the texts labeled non-duplicate of any of its members (other components)."""
    neg = frame[(frame["label"] == 0) & (frame["comp1"] != frame["comp2"])]
    found: dict[int, set[str]] = {}
    for comp, text in zip(neg["comp1"], neg["question2"].astype(str)):
        found.setdefault(int(comp), set()).add(text)
    for comp, text in zip(neg["comp2"], neg["question1"].astype(str)):
        found.setdefault(int(comp), set()).add(text)
    return {comp: sorted(texts) for comp, texts in found.items()}


def triplets(frame: pd.DataFrame, both_orders: bool = False, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split positives into (anchor, positive, negative) triplets and the pairs that have no labeled negative.

    The negative of a positive pair is a question labeled non-duplicate of a member of its duplicate
    component (never a member of that component), picked by a seeded hash so the choice is stable.
    """
    pos = positives(frame, both_orders)
    pool = negatives_by_component(frame)
    has = pos["comp"].map(lambda c: int(c) in pool)
    with_neg = pos[has].reset_index(drop=True)
    ranks = _rank((with_neg["anchor"] + "\0" + with_neg["positive"]).tolist(), seed)
    with_neg["negative"] = [pool[int(c)][int(r % len(pool[int(c)]))] for c, r in zip(with_neg["comp"], ranks)]
    return with_neg[["anchor", "positive", "negative", "comp"]], pos[~has].reset_index(drop=True)


def labeled_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """(sentence1, sentence2, label) with a float label, for the auxiliary pair loss."""
    return pd.DataFrame(
        {
            "sentence1": frame["question1"].astype(str).to_numpy(),
            "sentence2": frame["question2"].astype(str).to_numpy(),
            "label": frame["label"].astype(float).to_numpy(),
        }
    )


def component_lookup(frames: Sequence[pd.DataFrame]) -> dict[str, int]:
    """Map each normalized question text to its duplicate component id."""
    lookup: dict[str, int] = {}
    for frame in frames:
        lookup.update(zip(frame["key1"], frame["comp1"].astype(int)))
        lookup.update(zip(frame["key2"], frame["comp2"].astype(int)))
    return lookup


def aux_sample(frame: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """A seeded `share` of the labeled pairs (at least one, label mix kept by sampling within each label)."""
    if share >= 1.0 or frame.empty:
        return frame
    parts = [
        group.sample(n=max(1, round(len(group) * share)), random_state=seed)
        for _, group in frame.groupby(frame["label"].astype(int), sort=True)
    ]
    return pd.concat(parts).sort_index()


def require_positives(frame: pd.DataFrame, split: str = "train") -> None:
    """Refuse a split without a duplicate pair: MNRL learns from positives (label=1) only."""
    if not (frame["label"] == 1).any():
        raise DataError(
            f"data: the {split} split has no duplicate pair (label=1) among its {len(frame):,} pairs; MNRL needs "
            "positives (check data.columns.label and the file's labels)"
        )


AUX_COLUMNS = ("aux_sentence1", "aux_sentence2")  # a joint row's auxiliary pair (its label is the row's `label`)


def joint_examples(datasets: dict[str, pd.DataFrame], seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Each MNRL dataset with one auxiliary pair zipped onto every row (`loss.combine=joint`), and what was zipped.

    A batch of a joint dataset is then one MNRL batch and one auxiliary batch of the same size, so one optimiser step
    sums both losses' gradients. The auxiliary pairs are taken in a seeded order and dealt to the MNRL datasets'
    rows in turn (cycled when there are fewer pairs than rows; when there are more, the rest are unused); an epoch is
    one pass over the MNRL rows. Without `aux_pairs` the datasets are returned as they are.
    """
    if "aux_pairs" not in datasets:
        return datasets, {}
    aux = datasets["aux_pairs"]
    order = aux.index.to_numpy()[np.argsort(_rank((aux["sentence1"] + "\0" + aux["sentence2"]).tolist(), seed))]
    mnrl = {name: df for name, df in datasets.items() if name.startswith("mnrl")}
    rows = sum(len(df) for df in mnrl.values())
    dealt = order[np.arange(rows) % len(order)]
    out: dict[str, pd.DataFrame] = {}
    start = 0
    for name, frame in mnrl.items():
        picked = aux.loc[dealt[start : start + len(frame)]]
        start += len(frame)
        out[name] = frame.reset_index(drop=True).assign(
            **{AUX_COLUMNS[0]: picked["sentence1"].to_numpy(), AUX_COLUMNS[1]: picked["sentence2"].to_numpy()},
            label=picked["label"].to_numpy(),
        )
    stats = {"joint_aux_pairs": len(aux), "joint_aux_unused": max(0, len(aux) - rows), "joint_rows": rows}
    return out, stats


MinedNegatives = Mapping[tuple[str, str], Sequence[str]]  # (anchor, positive) -> mined negatives, best first


def negative_columns(n: int, first: int = 1) -> list[str]:
    """negative_<first> .. negative_<first + n - 1>: MNRL takes every column after the positive as a negative."""
    return [f"negative_{i}" for i in range(first, first + n)]


def with_mined(
    pos: pd.DataFrame, mined: MinedNegatives, n: int, first: int = 1, skip: Sequence[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split positives into those with `n` mined negatives (added as columns negative_<first>..) and the rest.

    `skip`, one text per row (its labeled negative), is never taken as a mined negative of that row."""
    picked, full = [], []
    for i, (a, p) in enumerate(zip(pos["anchor"], pos["positive"])):
        found = list(mined.get((a, p), ()))
        if skip is not None:
            found = [t for t in found if question_key(t) != question_key(skip[i])]
        picked.append(found[:n])
        full.append(len(found) >= n)
    full = np.array(full, dtype=bool)
    got = pos[full].reset_index(drop=True)
    columns = negative_columns(n, first)
    values = [row for row, ok in zip(picked, full) if ok]
    for j, name in enumerate(columns):
        got[name] = [row[j] for row in values]
    return got, pos[~full].reset_index(drop=True)


def mined_examples(
    frame: pd.DataFrame, negatives: str, mined: MinedNegatives, n: int, both_orders: bool, seed: int
) -> dict[str, pd.DataFrame]:
    """The MNRL datasets with mined negatives (contrastive.mining), text columns only.

    mined: mnrl_mined (anchor, positive, negative_1..n), mnrl_pairs (positives with fewer than n).
    both: mnrl_both (the labeled negative as negative_1, then n mined ones that differ from it), mnrl_mined (no
    labeled negative), mnrl_triplets (a labeled negative but fewer than n mined), mnrl_pairs (neither)."""
    out: dict[str, pd.DataFrame] = {}
    if negatives == "mined":
        out["mnrl_mined"], out["mnrl_pairs"] = with_mined(positives(frame, both_orders), mined, n)
    elif negatives == "both":
        trip, rest = triplets(frame, both_orders, seed)
        trip = trip.rename(columns={"negative": "negative_1"})
        out["mnrl_both"], labeled_only = with_mined(trip, mined, n, first=2, skip=trip["negative_1"].tolist())
        out["mnrl_mined"], out["mnrl_pairs"] = with_mined(rest, mined, n)
        out["mnrl_triplets"] = labeled_only.rename(columns={"negative_1": "negative"})
        out = {name: out[name] for name in ("mnrl_both", "mnrl_mined", "mnrl_triplets", "mnrl_pairs")}
    else:
        raise ValueError(f"no mined datasets for negatives={negatives!r}")
    return {name: df.drop(columns="comp") for name, df in out.items()}


def build_examples(
    frame: pd.DataFrame,
    hard_negatives: bool,
    with_aux: bool,
    both_orders: bool = False,
    seed: int = 0,
    aux_share: float = 1.0,
    negatives: str = "labeled",
    mined: MinedNegatives | None = None,
    num_negatives: int = 1,
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The training datasets by name (mnrl_triplets, mnrl_pairs, aux_pairs; with mined negatives mnrl_mined and
    mnrl_both, see mined_examples) and their sizes.

    `aux_share` < 1 gives the auxiliary loss a seeded sample of that share of the labeled pairs. The Trainer draws
    each batch from one dataset in proportion to its size, so this sets the share of optimiser steps that go to
    the auxiliary loss (with gradient clipping and Adam, a loss weight alone barely changes that balance).
    `negatives` mined / both take `mined` ((anchor, positive) -> negatives, contrastive.mining) and
    `num_negatives`; without `hard_negatives` there are no explicit negatives whatever `negatives` says."""
    require_positives(frame)
    datasets: dict[str, pd.DataFrame] = {}
    if hard_negatives and negatives != "labeled":
        datasets.update(mined_examples(frame, negatives, mined or {}, int(num_negatives), both_orders, seed))
    elif hard_negatives:
        trip, rest = triplets(frame, both_orders, seed)
        datasets["mnrl_triplets"] = trip.drop(columns="comp")
        datasets["mnrl_pairs"] = rest.drop(columns="comp")
    else:
        datasets["mnrl_pairs"] = positives(frame, both_orders).drop(columns="comp")
    if with_aux:
        datasets["aux_pairs"] = labeled_pairs(aux_sample(frame, aux_share, seed))
    datasets = {name: df for name, df in datasets.items() if len(df)}
    sizes = {f"examples_{name}": len(df) for name, df in datasets.items()}
    return datasets, sizes
