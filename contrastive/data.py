"""QQP loading (hub / parquet / csv / tsv / jsonl), validation, question identity, components, leak-free split."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contrastive.errors import DataError
from contrastive.settings import DataSettings
from contrastive.utils import file_state, seeded_hash, sha256_hex

log = logging.getLogger(__name__)

COLUMNS = ("question1", "question2", "label")
SPLITS = ("train", "val", "test")
FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_WS = re.compile(r"\s+")


@dataclass
class PreparedData:
    """The result of the data stage: one DataFrame per split, a summary and a content fingerprint.

    Each split has columns question1, question2, label (int 0/1), key1, key2 (question identity) and
    comp1, comp2 (duplicate component ids; comp1 == comp2 for every label=1 pair).
    """

    splits: dict[str, pd.DataFrame]
    summary: dict[str, Any]
    fingerprint: str
    questions: dict[str, str] = field(default_factory=dict)  # identity key -> display text


# ---------------------------------------------------------------- loading
def _read_file(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    if fmt == "tsv":
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype=str, quoting=3)
    return pd.read_json(path, lines=True, dtype=False)


def file_format(path: str | Path, fmt: str | None = None) -> str:
    """The format of a data file: `data.format` when set, else from its extension."""
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise DataError(f"data.format: unknown format {fmt!r} (choose parquet, csv, tsv, jsonl)")
        return fmt
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    if not suffixes or suffixes[-1] not in FORMATS:
        raise DataError(
            f"data.path: cannot tell the format of {path} (use .parquet/.csv/.tsv/.jsonl or set data.format)"
        )
    return FORMATS[suffixes[-1]]


def load_local(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a local pairs file; missing, unreadable or empty files are DataErrors."""
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError(f"data.path: file not found: {file}")
    if file.is_dir():
        raise DataError(f"data.path: {file} is a directory, expected a pairs file")
    if file.stat().st_size == 0:
        raise DataError(f"data.path: {file} is empty")
    kind = file_format(file, fmt)
    try:
        frame = _read_file(file, kind)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a malformed file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.path: cannot read {file} as {kind}: {first}") from exc
    if frame.empty:
        raise DataError(f"data.path: {file} holds no rows")
    return frame


def load_hub(dataset: str, config: str | None, splits: Iterable[str]) -> pd.DataFrame:
    """GLUE QQP (or another hub dataset) through `datasets`, the given splits concatenated."""
    try:
        from datasets import load_dataset

        parts = [load_dataset(dataset, config, split=s).to_pandas() for s in splits]
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"data.source=hub: cannot load {dataset}/{config} ({first}); offline, pass a local file: "
            "data=qqp_local data.path=/path/to/qqp.parquet"
        ) from exc
    return pd.concat(parts, ignore_index=True)


QUESTION_COLUMNS = ("question", "questions", "text")
TEXT_SUFFIXES = (".txt", ".text", "")


def _table_questions(table: pd.DataFrame, origin: str) -> list:
    """The question column(s) of a table: `question`, else question1 + question2, else its only column."""
    columns = {str(c).strip().lower(): c for c in table.columns}
    for name in QUESTION_COLUMNS:
        if name in columns:
            return table[columns[name]].tolist()
    if {"question1", "question2"} <= set(columns):
        return table[columns["question1"]].tolist() + table[columns["question2"]].tolist()
    if table.shape[1] == 1:
        return [table.columns[0], *table.iloc[:, 0].tolist()]  # no header: the first line is a question too
    raise DataError(
        f"{origin}: file has columns {list(table.columns)}; name one column 'question' "
        "(or give question1/question2, or a single column)"
    )


def read_questions(path: str | Path, origin: str) -> list[str]:
    """Questions from a .txt file (one a line) or a table file; errors start with `origin` (the field)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{origin}: file not found: {file}")
    try:
        if file.suffix.lower() in TEXT_SUFFIXES:
            items = file.read_text(encoding="utf-8").splitlines()
        else:
            items = _table_questions(load_local(file), origin)
    except UnicodeDecodeError as exc:
        raise DataError(f"{origin}: not UTF-8 text ({exc.reason})") from exc
    except DataError as exc:
        message = str(exc)
        raise DataError(message if message.startswith(origin) else f"{origin}: {message.split(': ', 1)[-1]}") from exc
    return [str(v) for v in items if v is not None and not pd.isna(v) and str(v).strip()]


def resolve_source(cfg: DataSettings) -> tuple[str, str | None]:
    """Decide where the data comes from: ('local', path) or ('hub', None), per `data.source`."""
    source, path = cfg.source, cfg.path
    if source == "local":
        if not path:
            raise DataError("data.path: no file given; pass data.path=/path/to/qqp.parquet")
        return "local", str(path)
    if source == "hub":
        return "hub", None
    if source == "auto":
        if path:
            return "local", str(path)
        default = cfg.default_path
        if default and Path(default).expanduser().is_file():
            return "local", str(default)
        return "hub", None
    raise DataError(f"data.source: unknown value {source!r} (choose auto, local, hub)")


def load_raw(cfg: DataSettings) -> tuple[pd.DataFrame, str]:
    """Load the configured pairs as a raw DataFrame; returns it and a description of its origin."""
    kind, path = resolve_source(cfg)
    if kind == "local":
        return load_local(path, cfg.format), str(Path(path).expanduser().resolve())
    hub = cfg.hub
    return load_hub(hub.dataset, hub.config, list(hub.splits)), f"hub:{hub.dataset}/{hub.config}"


# ---------------------------------------------------------------- validation
def _coerce_labels(values: pd.Series, column: str) -> pd.Series:
    """Map labels to int 0/1, accepting bools, 0/1 numbers and '0'/'1'/'true'/'false' strings."""
    mapping = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "true": 1, "false": 0}
    text = values.map(lambda v: str(v).strip().lower() if v is not None and not pd.isna(v) else None)
    coerced = text.map(mapping)
    bad = coerced.isna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())[:10].tolist()
        shown = [v.item() if isinstance(v, np.generic) else v for v in values.iloc[rows]]
        raise DataError(
            f"data.columns.label: column {column!r} has {int(bad.sum())} value(s) outside {{0,1}}, "
            f"e.g. rows {rows} = {shown} (rows count data rows from 0)"
        )
    return coerced.astype(int)


def question_key(text: str) -> str:
    """Normalized identity of a question's text: case-folded, white space collapsed and trimmed."""
    return _WS.sub(" ", str(text)).strip().casefold()


def validate(raw: pd.DataFrame, cfg: DataSettings) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rename the configured columns, check them, coerce labels; drop and count empty, self and repeated pairs."""
    cols = cfg.columns
    names = {std: getattr(cols, std) for std in COLUMNS}
    missing = [f"data.columns.{std}={name!r}" for std, name in names.items() if name not in raw.columns]
    if missing:
        raise DataError(f"{', '.join(missing)}: column not in data (it has {list(raw.columns)})")
    frame = pd.DataFrame({std: raw[name] for std, name in names.items()})
    for std in ("qid1", "qid2"):
        name = getattr(cols, std)
        frame[std] = raw[name].astype("string") if name and name in raw.columns else pd.NA
    frame["label"] = _coerce_labels(frame["label"], names["label"])
    stats = {"rows_read": len(frame)}

    for q in ("question1", "question2"):
        frame[q] = frame[q].astype("string")
    empty = frame["question1"].fillna("").str.strip().eq("") | frame["question2"].fillna("").str.strip().eq("")
    stats["dropped_empty_question"] = int(empty.sum())
    if empty.any() and cfg.on_empty == "error":
        rows = np.flatnonzero(empty.to_numpy())[:10].tolist()
        raise DataError(
            f"data.on_empty=error: {int(empty.sum())} empty or blank question(s), e.g. rows {rows} "
            "(rows count data rows from 0)"
        )
    frame = frame[~empty].copy()

    frame["key1"] = frame["question1"].map(question_key)
    frame["key2"] = frame["question2"].map(question_key)
    self_pair = frame["key1"].eq(frame["key2"])
    stats["dropped_self_pair"] = int(self_pair.sum())
    frame = frame[~self_pair]

    lo = frame[["key1", "key2"]].min(axis=1)
    hi = frame[["key1", "key2"]].max(axis=1)
    repeated = pd.DataFrame({"lo": lo, "hi": hi, "label": frame["label"]}).duplicated()
    stats["dropped_repeated_pair"] = int(repeated.sum())
    frame = frame[~repeated.to_numpy()]
    conflict = pd.DataFrame({"lo": lo, "hi": hi}).loc[frame.index].duplicated(keep=False)
    stats["conflicting_label_pairs"] = int(conflict.sum())
    frame = frame.reset_index(drop=True)
    stats["rows_kept"] = len(frame)
    if frame.empty:
        raise DataError(f"data: no valid rows left after validation ({empty_reason(stats, names)})")
    return frame, stats


def empty_reason(stats: dict[str, int], names: dict[str, str]) -> str:
    """Which rules removed every row (the validation counts), and the likely cause when every pair is a self-pair."""
    dropped = {k: v for k, v in stats.items() if k.startswith("dropped_") and v}
    said = ", ".join(f"{k.removeprefix('dropped_')}={v:,}" for k, v in dropped.items()) or "the file has no rows"
    if stats.get("dropped_self_pair") and names["question1"] == names["question2"]:
        said += (
            f"; data.columns.question1 and data.columns.question2 both name column {names['question1']!r}, "
            "so every pair is a question with itself"
        )
    return f"{stats.get('rows_read', 0):,} read, removed: {said}"


# ---------------------------------------------------------------- identity and components
class UnionFind:
    """Disjoint sets over hashable items, with path halving."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        parent = self.parent.setdefault(item, item)
        while parent != item:
            grand = self.parent[parent]
            self.parent[item] = grand
            item, parent = parent, self.parent.setdefault(grand, grand)
        return item

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # the smaller key becomes the root, so roots do not depend on insertion order
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            self.parent[hi] = lo


def merge_by_qid(frame: pd.DataFrame) -> pd.DataFrame:
    """Where the source has qids, text keys sharing a qid become one question identity."""
    ids = pd.concat(
        [
            frame[["key1", "qid1"]].set_axis(["key", "qid"], axis=1),
            frame[["key2", "qid2"]].set_axis(["key", "qid"], axis=1),
        ]
    ).dropna()
    if ids.empty:
        return frame
    sets = UnionFind()
    for key, qid in ids.itertuples(index=False):
        sets.union(key, "\0qid:" + str(qid))
    canon: dict[str, str] = {}
    for key in ids["key"].unique():
        canon[key] = sets.find(key)
    # roots may be qid nodes; map each group to its smallest text key instead
    groups: dict[str, str] = {}
    for key, root in canon.items():
        groups[root] = min(groups.get(root, key), key)
    out = frame.copy()
    for col in ("key1", "key2"):
        out[col] = out[col].map(lambda k: groups.get(canon.get(k, k), k))
    return out


def components(frame: pd.DataFrame, labels: tuple[int, ...] = (1,)) -> dict[str, int]:
    """Connected components of the pairs whose label is in `labels`; every question key gets an id.

    With the default, these are the duplicate components (union-find over label=1 pairs). Ids are
    numbered by each component's smallest key, so they do not depend on row order.
    """
    sets = UnionFind()
    for key in pd.unique(frame[["key1", "key2"]].to_numpy().ravel()):
        sets.find(key)
    linked = frame[frame["label"].isin(labels)]
    for a, b in zip(linked["key1"], linked["key2"]):
        sets.union(a, b)
    roots = {key: sets.find(key) for key in sets.parent}
    order = {root: i for i, root in enumerate(sorted(set(roots.values())))}
    return {key: order[root] for key, root in roots.items()}


def assign_splits(comp_of: Mapping[str, int], fractions: Mapping[str, float], seed: int) -> dict[int, str]:
    """Give each component a split: components in seeded hash order fill the splits by question count."""
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise DataError(f"data.split: fractions must be >= 0 and sum > 0, got {dict(fractions)}")
    members: dict[int, list[str]] = {}
    for key, comp in comp_of.items():
        members.setdefault(comp, []).append(key)
    order = sorted(members, key=lambda c: seeded_hash(min(members[c]), seed))
    n_questions = len(comp_of)
    bounds = np.cumsum([fractions[s] / total for s in fractions]) * n_questions
    names = list(fractions)
    result: dict[int, str] = {}
    seen = 0
    idx = 0
    for comp in order:
        while idx < len(names) - 1 and seen >= bounds[idx]:
            idx += 1
        result[comp] = names[idx]
        seen += len(members[comp])
    return result


GROUPINGS = {"duplicates": (1,), "all_pairs": (0, 1)}


def split_pairs(
    frame: pd.DataFrame, fractions: Mapping[str, float], seed: int, group_by: str = "all_pairs"
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Split pairs by component so no question is in two splits; pairs crossing splits are dropped.

    `group_by=duplicates` keeps whole duplicate components together (the design's protocol) and drops
    labeled non-duplicates that cross splits; `all_pairs` keeps whole connected components of every
    labeled pair together, a coarser grouping that is just as leak-free and drops no pair.
    """
    if group_by not in GROUPINGS:
        raise DataError(f"data.split.group_by: unknown value {group_by!r} (choose {', '.join(GROUPINGS)})")
    comp_of = components(frame)
    group_of = comp_of if group_by == "duplicates" else components(frame, GROUPINGS[group_by])
    split_of = assign_splits(group_of, fractions, seed)
    out = frame.copy()
    out["comp1"] = out["key1"].map(comp_of)
    out["comp2"] = out["key2"].map(comp_of)
    s1 = out["key1"].map(group_of).map(split_of)
    s2 = out["key2"].map(group_of).map(split_of)
    cross = s1 != s2
    splits = {name: out[(~cross) & (s1 == name)].reset_index(drop=True) for name in fractions}
    keys = {name: set(df["key1"]) | set(df["key2"]) for name, df in splits.items()}
    names = list(fractions)
    leaked = sum(len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1 :])
    stats = {
        "questions": len(comp_of),
        "components": len(set(comp_of.values())),
        "components_ge2": sum(1 for c, n in pd.Series(list(comp_of.values())).value_counts().items() if n >= 2),
        "cross_split_pairs_dropped": int(cross.sum()),
        "leaked_keys": leaked,
    }
    return splits, stats


def fingerprint_frame(frame: pd.DataFrame) -> str:
    """A content hash of the validated pairs that ignores row order."""
    rows = pd.util.hash_pandas_object(frame[["key1", "key2", "label"]], index=False).to_numpy()
    return sha256_hex(np.sort(rows).tobytes())


def summarize(stats: Mapping[str, Any], splits: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """The data summary as a flat dict: counts, drops with reasons, per-split sizes."""
    summary = dict(stats)
    for name, df in splits.items():
        summary[f"{name}_pairs"] = len(df)
        summary[f"{name}_duplicate_rate"] = round(float(df["label"].mean()), 4) if len(df) else 0.0
        summary[f"{name}_questions"] = len(set(df["key1"]) | set(df["key2"]))
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as an aligned two-column table."""
    width = max(len(k) for k in summary)
    lines = ["data summary", "-" * (width + 14)]
    for key, value in summary.items():
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        lines.append(f"{key:<{width}}  {shown:>12}")
    return "\n".join(lines)


_PREPARED: dict[str, PreparedData] = {}  # this process's last prepared data, by settings + source file state


def prepared_key(cfg: DataSettings) -> str:
    """What a prepared result depends on: the data settings, and for a local file its path, size and mtime."""
    kind, path = resolve_source(cfg)
    state = file_state(path) if kind == "local" and Path(path).expanduser().is_file() else None
    return json.dumps([dataclasses.asdict(cfg), state], sort_keys=True, default=str)


def prepare(cfg: DataSettings) -> PreparedData:
    """The whole data stage: load, validate, identities, components, split, summary.

    The result is kept for the process: a later call with the same settings and an unchanged file (the next
    sweep trial in the same worker process) gets a copy of it without reading, validating and splitting again.
    """
    key = prepared_key(cfg)
    if key not in _PREPARED:
        _PREPARED.clear()  # one dataset at a time
        _PREPARED[key] = prepare_uncached(cfg)
    kept = _PREPARED[key]
    return PreparedData(
        splits={name: frame.copy() for name, frame in kept.splits.items()},
        summary=copy.deepcopy(kept.summary),
        fingerprint=kept.fingerprint,
        questions=dict(kept.questions),
    )


def prepare_uncached(cfg: DataSettings) -> PreparedData:
    """prepare() without the process's memory of its last result."""
    raw, origin = load_raw(cfg)
    frame, stats = validate(raw, cfg)
    frame = merge_by_qid(frame)
    split = cfg.split
    splits, split_stats = split_pairs(frame, dict(split.fractions), int(split.seed), split.group_by)
    summary = {"source": origin, **stats, **split_stats}
    summary = summarize(summary, splits)
    questions = dict(zip(frame["key1"], frame["question1"]))
    questions.update({k: v for k, v in zip(frame["key2"], frame["question2"]) if k not in questions})
    return PreparedData(splits=splits, summary=summary, fingerprint=fingerprint_frame(frame), questions=questions)
