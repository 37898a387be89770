"""Warm start (`hydra.sweeper.warm_start`): recorded runs enter a study as finished trials before its first ask.

Sources: JSONL files (one run a line) and/or another study in the same storage (its COMPLETE trials). A record
is added (`study.add_trial` with the study's distributions) only when
  - it carries every `match` key with the value the sweep expects (e.g. the evaluation protocol and the data
    fingerprint: values measured elsewhere are not comparable),
  - its params lie in the space: each distribution's value from the record's `params`, else from its
    `overrides` (`key=value`), else the sweep's own default for that key; fixed params must agree, and so must
    any other key the record overrides, unless it matches a pattern of `ignore` (paths, tracking, or what the
    `match` keys already stand for),
  - it has a finite value per objective: `values`, else `<metrics_key>[<metric name>]` (the study's metric names).
The rest are counted and skipped with a reason. Added trials carry the user attr `warm_start` (their source), do
not count toward `n_trials`, and are never promoted (no model); a rerun does not add a source twice.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from hydra_plugins.contrastive_sweeper._errors import SweeperConfigError
from hydra_plugins.contrastive_sweeper.search_space import SearchSpace
from hydra_plugins.contrastive_sweeper.trial import TRIAL_KEY, WARM_ATTR

log = logging.getLogger(__name__)

SUMMARY_ATTR = "warm_start_summary"  # study user attr: added / skipped counts with reasons, per source


@dataclass
class WarmStartConf:
    """`hydra.sweeper.warm_start`; the keys are commented in conf/hydra/sweeper/optuna.yaml."""

    files: list[str] = field(default_factory=list)
    study: str | None = None
    match: dict[str, Any] = field(default_factory=dict)
    metrics_key: str = "finetuned"
    ignore: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What one warm start did: trials added, records skipped by reason."""

    added: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"added": len(self.added), "sources": self.added, "skipped": dict(self.skipped)}


class Skip(Exception):
    """A record that does not enter the study (the message is the reason)."""


def warm_start_conf(spec: Mapping[str, Any] | None) -> WarmStartConf | None:
    """The checked settings, or None when there is nothing to add."""
    if not spec:
        return None
    unknown = sorted(set(spec) - set(WarmStartConf.__dataclass_fields__))
    if unknown:
        keys = ", ".join(WarmStartConf.__dataclass_fields__)
        raise SweeperConfigError(f"hydra.sweeper.warm_start: unknown key(s) {unknown} ({keys})")
    conf = WarmStartConf(**dict(spec))
    if isinstance(conf.files, str):
        conf.files = [conf.files]
    return conf if conf.files or conf.study else None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines ignored); SweeperConfigError when it cannot be read."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SweeperConfigError(f"hydra.sweeper.warm_start.files: {path}: {exc.strerror}") from None
    return [json.loads(line) for line in lines if line.strip()]


def record_params(
    record: Mapping[str, Any], space: SearchSpace, defaults: DictConfig, ignore: Sequence[str] = ()
) -> dict[str, Any]:
    """The record's value of each swept parameter (params, overrides, else the sweep's default); Skip when one
    lies outside its distribution, a fixed param disagrees, or another overridden key (not `ignore`d) differs
    from the sweep's config."""
    given = dict(record.get("params") or {})
    for item in record.get("overrides") or []:
        key, sep, value = str(item).lstrip("+").partition("=")
        if sep and key not in given:
            given[key] = _value(value)
    params = {}
    for name, dist in space.distributions.items():
        value = given[name] if name in given else _default(defaults, name)
        try:
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                value = next(c for c in dist.choices if str(c) == str(value))
            else:
                value = float(value) if isinstance(dist, optuna.distributions.FloatDistribution) else int(value)
            inside = dist._contains(dist.to_internal_repr(value))
        except (StopIteration, TypeError, ValueError):
            inside = False
        if not inside:
            raise Skip(f"{name} outside the space")
        params[name] = value
    for name, override in space.fixed.items():  # name -> its override line, e.g. "loss.aux=cosent"
        fixed = _value(override.partition("=")[2])
        value = given[name] if name in given else _default(defaults, name)
        if str(value) != str(fixed):
            raise Skip(f"{name} is not the fixed {fixed}")
    for name, value in given.items():
        if name.startswith(f"{TRIAL_KEY}.") or name in space.distributions or name in space.fixed:
            continue  # which trial of which study (the sweeper's address) is bookkeeping, not a setting
        if any(fnmatch.fnmatch(name, p) for p in ignore):
            continue
        if str(value) != str(_default(defaults, name)):
            raise Skip(f"{name} differs from the sweep's")
    return params


def record_values(record: Mapping[str, Any], names: Sequence[str] | None, n: int, metrics_key: str) -> list[float]:
    """One finite value per objective; Skip otherwise."""
    values = record.get("values")
    if values is None and names:
        metrics = record.get(metrics_key) or {}
        values = [metrics.get(name) for name in names]
    values = values if isinstance(values, list) else [values]
    if len(values) != n or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise Skip("no value per objective")
    return [float(v) for v in values]


def check_match(record: Mapping[str, Any], match: Mapping[str, Any]) -> None:
    """Skip unless the record carries each `match` key with the expected value."""
    for key, expected in match.items():
        if key not in record:
            raise Skip(f"no {key}")
        if str(record[key]) != str(expected):
            raise Skip(f"another {key}")


def study_records(study: optuna.Study, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Another study's COMPLETE trials as records (its trials' user attrs carry the match keys)."""
    source = optuna.load_study(study_name=name, storage=study._storage)
    return [
        (f"study:{name}#{t.number}", {**t.user_attrs, "params": t.params, "values": t.values})
        for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]


def warm_start(
    study: optuna.Study, conf: WarmStartConf, space: SearchSpace, defaults: DictConfig, names: Sequence[str] | None
) -> Outcome:
    """Add the matching records as COMPLETE trials (once per source); what was added and skipped, also recorded as
    the study's user attr `warm_start_summary`."""
    done = {t.user_attrs.get(WARM_ATTR) for t in study.get_trials(deepcopy=False)}
    records: list[tuple[str, dict[str, Any]]] = []
    for file in conf.files:
        path = Path(file).expanduser()
        records += [(f"{path.name}#{r.get('name', i)}", r) for i, r in enumerate(read_records(path))]
    if conf.study:
        records += study_records(study, conf.study)
    outcome = Outcome()
    for source, record in records:
        if source in done:
            outcome.skipped["already added"] += 1
            continue
        try:
            check_match(record, conf.match)
            params = record_params(record, space, defaults, conf.ignore)
            values = record_values(record, names, len(study.directions), conf.metrics_key)
        except Skip as why:
            outcome.skipped[str(why)] += 1
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=dict(space.distributions), values=values, user_attrs={WARM_ATTR: source}
            )
        )
        outcome.added.append(source)
    log.info("warm start: %d trial(s) added %s; skipped %s", len(outcome.added), outcome.added, dict(outcome.skipped))
    study.set_user_attr(SUMMARY_ATTR, outcome.as_dict())
    return outcome


def _value(text: str) -> Any:
    """An override's value as YAML reads it (numbers, booleans, null, strings)."""
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return text


def _default(defaults: DictConfig, key: str) -> Any:
    """The sweep config's value of `key` (what a run that did not override it used); None when unset."""
    try:
        return OmegaConf.select(defaults, key, default=None)
    except Exception:  # noqa: BLE001 - an interpolation that does not resolve here
        return None
