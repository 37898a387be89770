"""Training examples from split pairs: positives, hard-negative triplets, labeled pairs; the component sampler."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler

from contrastive.data import components, question_key
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


def length_grouped(order: Sequence[int], lengths: Sequence[int], window: int) -> list[int]:
    """`order` with each consecutive window of `window` indices sorted by length (stable): shuffled mega-batches
    whose batches, cut from the sorted windows, hold examples of similar length and so little padding."""
    if window <= 1:
        return list(order)
    out: list[int] = []
    for start in range(0, len(order), window):
        chunk = list(order[start : start + window])
        out.extend(sorted(chunk, key=lambda i: lengths[i]))
    return out


class ComponentBatchSampler(BatchSampler):
    """Batches in which no two examples share a duplicate component, so no in-batch negative is a duplicate.

    Each example's components are those of all its texts (anchor, positive, hard negative). Indices are
    shuffled with `seed + epoch`; an example that would clash with its batch is deferred to a later batch.
    Once a batch can no longer be filled (the rest all share a few large components), the epoch ends there:
    those examples are dropped from this epoch (a reshuffle gives them a chance in the next one).
    Datasets with a `label` column (the auxiliary pairs) have no in-batch negatives and are batched plainly.
    Each epoch's batches are planned once, so `len()` is exact (multi-dataset samplers draw `len()` batches);
    `stats` holds how many examples that epoch deferred and dropped.

    Length grouping (`mega_batches` > 1 and per-example `lengths`): the shuffled order is cut into windows of
    `mega_batches * batch_size` examples, each sorted by length; full batches are formed in each window as above
    (still component-clean; what cannot complete a batch there is sorted into the next window), and the
    batches are then shuffled (seeded) so an epoch does not run short-to-long. Only which examples share a batch
    changes, and padding (hence compute) shrinks; near-duplicate questions have similar lengths, so large
    components crowd the same length range and a few more of their examples may end up dropped from the epoch
    (QQP, 2,000 pairs: ~4% more). `mega_batches` 0 or 1 leaves the batches exactly as without grouping.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        lookup: Mapping[str, int] | None = None,
        lengths: Sequence[int] | None = None,
        mega_batches: int = 0,
    ) -> None:
        super().__init__(range(len(dataset)), batch_size=batch_size, drop_last=drop_last)
        self.generator = generator
        self.seed = seed
        self.epoch = 0
        labels = set(valid_label_columns or ["label", "score"])
        self.text_columns = [c for c in dataset.column_names if c not in labels]
        self.plain = bool(labels & set(dataset.column_names))
        self.groups = self._example_groups(dataset, lookup or {})
        if lengths is not None and len(lengths) != len(self.groups):
            raise ValueError(f"lengths: {len(lengths)} values for {len(self.groups)} examples")
        self.lengths = list(lengths) if lengths is not None else None
        self.mega_batches = int(mega_batches) if self.lengths is not None else 0
        self.stats: dict[str, int] = {"examples": len(dataset), "deferred": 0, "dropped": 0}
        self._planned: tuple[tuple[int, int], list[list[int]]] | None = None

    def _example_groups(self, dataset: Any, lookup: Mapping[str, int]) -> list[frozenset]:
        columns = [dataset[c] for c in self.text_columns]
        groups = []
        for texts in zip(*columns):
            keys = [question_key(t) for t in texts]
            groups.append(frozenset(lookup.get(k, k) for k in keys))
        return groups

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.groups), generator=gen).tolist()

    def _shuffle_batches(self, batches: list[list[int]]) -> list[list[int]]:
        """Full batches in a seeded random order (a short last batch stays last): grouped windows run short
        to long, and an epoch should not."""
        if self.mega_batches <= 1 or len(batches) < 2:
            return batches
        tail = [batches.pop()] if len(batches[-1]) < self.batch_size else []
        gen = torch.Generator().manual_seed(self.seed + self.epoch + 1_000_003)
        return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()] + tail

    def _plan(self) -> list[list[int]]:
        """This epoch's batches, computed once per epoch so that `__len__` matches what `__iter__` yields."""
        if self._planned is not None and self._planned[0] == (self.seed, self.epoch):
            return self._planned[1]
        order = self._order()
        self.stats = {"examples": len(self.groups), "deferred": 0, "dropped": 0}
        batches = self._plain(order) if self.plain else self._component_batches(order)
        batches = self._shuffle_batches(batches)
        self._planned = ((self.seed, self.epoch), batches)
        return batches

    def _fill(self, remaining: list[int], deferred_once: set[int]) -> tuple[list[int], list[int]]:
        """One batch taken greedily from `remaining` (an example clashing with it is passed over, i.e. deferred),
        and what is left, in order."""
        batch: list[int] = []
        used: set = set()
        rest: list[int] = []
        for pos, idx in enumerate(remaining):
            if len(batch) == self.batch_size:
                rest.extend(remaining[pos:])
                break
            if self.groups[idx] & used:
                deferred_once.add(idx)
                rest.append(idx)
            else:
                batch.append(idx)
                used |= self.groups[idx]
        return batch, rest

    def _grouped_windows(self, order: list[int], batches: list[list[int]], deferred_once: set[int]) -> list[int]:
        """Full batches cut from each length-sorted window of the shuffled order (appended to `batches`). Examples
        that cannot complete a batch in their window are sorted into the next one by length (not prepended to
        its shortest batch); returns what the last window leaves."""
        window = self.mega_batches * self.batch_size
        carry: list[int] = []
        for start in range(0, len(order), window):
            pool = sorted(carry + order[start : start + window], key=self.lengths.__getitem__)
            while len(pool) >= self.batch_size:
                batch, rest = self._fill(pool, deferred_once)
                if len(batch) < self.batch_size:
                    break
                batches.append(batch)
                pool = rest
            carry = pool
        return carry

    def _component_batches(self, remaining: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        deferred_once: set[int] = set()
        if self.mega_batches > 1:
            remaining = self._grouped_windows(remaining, batches, deferred_once)
        while remaining:
            batch, remaining = self._fill(remaining, deferred_once)
            if len(batch) < self.batch_size:
                # short batch: what is left all clashes (a few large components). Rather than a tail of
                # tiny batches with almost no in-batch negatives, leave those examples out of this epoch.
                self.stats["dropped"] += len(remaining) + (len(batch) if self.drop_last else 0)
                deferred_once.difference_update(remaining)
                if not self.drop_last:
                    batches.append(batch)
                break
            batches.append(batch)
        self.stats["deferred"] = len(deferred_once)
        return batches

    def _plain(self, order: list[int]) -> list[list[int]]:
        if self.mega_batches > 1:
            order = length_grouped(order, self.lengths, self.mega_batches * self.batch_size)
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size and self.drop_last:
            self.stats["dropped"] += len(batches.pop())
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(batch) for batch in self._plan())

    def __len__(self) -> int:
        return len(self._plan())


def aux_sample(frame: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """A seeded `share` of the labeled pairs (at least one, label mix kept by sampling within each label)."""
    if share >= 1.0 or frame.empty:
        return frame
    parts = [
        group.sample(n=max(1, round(len(group) * share)), random_state=seed)
        for _, group in frame.groupby(frame["label"].astype(int), sort=True)
    ]
    return pd.concat(parts).sort_index()


def build_examples(
    frame: pd.DataFrame,
    hard_negatives: bool,
    with_aux: bool,
    both_orders: bool = False,
    seed: int = 0,
    aux_share: float = 1.0,
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The training datasets by name (mnrl_triplets, mnrl_pairs, aux_pairs) and their sizes.

    `aux_share` < 1 gives the auxiliary loss a seeded sample of that share of the labeled pairs. The Trainer draws
    each batch from one dataset in proportion to its size, so this sets the share of optimiser steps that go to
    the auxiliary loss (with gradient clipping and Adam, a loss weight alone barely changes that balance)."""
    datasets: dict[str, pd.DataFrame] = {}
    if hard_negatives:
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
