"""The search space: Hydra sweep syntax or Optuna specs -> Optuna distributions, and a trial -> job overrides.

Optuna is imported inside the functions: Hydra imports every public module of a plugin at start-up, so the
module stays cheap for `--help` and single runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydra_plugins.contrastive_sweeper._errors import SweeperConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial, Trial


@dataclass
class SearchSpace:
    """Sampled parameters (Optuna distributions, keyed by override key) and fixed overrides passed to every job."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # param name -> override key (with + / ++ prefix)
    fixed: dict[str, str] = field(default_factory=dict)  # param name -> full override string

    def describe(self) -> dict[str, str]:
        """One readable line per sampled parameter (for logs and MLflow params)."""
        return {name: describe_distribution(d) for name, d in self.distributions.items()}


def describe_distribution(dist: BaseDistribution) -> str:
    """`choice(...)`, `int[low, high]` or `float[low, high, log]`: a distribution in one short line."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    extra = ", log" if dist.log else (f", step={dist.step}" if dist.step not in (None, 1) else "")
    return f"{kind}[{dist.low}, {dist.high}{extra}]"


def distribution_from_spec(name: str, spec: Mapping[str, Any]) -> BaseDistribution:
    """An Optuna distribution from `{type: float|int|categorical, low, high, log, step, choices}`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = spec.get("type")
    try:
        if kind == "categorical":
            return CategoricalDistribution(list(spec["choices"]))
        if kind == "float":
            return FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=None if spec.get("step") is None else float(spec["step"]),
            )
        if kind == "int":
            return IntDistribution(
                int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)), step=int(spec.get("step") or 1)
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise SweeperConfigError(f"hydra.sweeper.params.{name}={dict(spec)!r}: {exc}") from None
    raise SweeperConfigError(f"hydra.sweeper.params.{name}.type={kind!r}: choose float, int or categorical")


def distribution_from_override(override: Override) -> BaseDistribution:
    """An Optuna distribution from a Hydra sweep override: choice(), range(), interval() (float), with the
    tags `log` (log scale) and `int` (integers), e.g. tag(log, int, interval(16, 256))."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    where = override.input_line
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        bad = [c for c in choices if not isinstance(c, (str, int, float, bool, type(None)))]
        if bad:
            raise SweeperConfigError(f"{where}: choices must be plain values (str, number, bool, null), got {bad[0]!r}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if value.shuffle or any(isinstance(v, float) for v in (start, stop, step)):
            return CategoricalDistribution(list(override.sweep_iterator()))
        values = list(range(int(start), int(stop), int(step)))
        if not values or step < 0:
            raise SweeperConfigError(f"{where}: the range is empty (or descending)")
        return IntDistribution(values[0], values[-1], step=int(step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags:  # Hydra's interval() is always float: tag(int, interval(1, 8)) asks for integers
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise SweeperConfigError(
        f"{where}: this sweep type is not supported by the Optuna sweeper "
        "(use choice, range, interval or tag(log, interval))"
    )


def _param_name(override: Override) -> str:
    name = override.key_or_group
    return f"{name}@{override.package}" if override.package else name


def parse_search_space(
    params: Mapping[str, Any] | None, arguments: Sequence[str], parser: OverridesParser | None = None
) -> SearchSpace:
    """`hydra.sweeper.params` then the command-line overrides (a later key replaces an earlier one)."""
    parser = parser or OverridesParser.create()
    space = SearchSpace()
    lines: list[str] = []
    for name, spec in (params or {}).items():
        if isinstance(spec, (Mapping, DictConfig)):
            spec = OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else dict(spec)
            space.fixed.pop(str(name), None)
            space.keys[str(name)] = str(name)
            space.distributions[str(name)] = distribution_from_spec(str(name), spec)
        else:
            lines.append(f"{name}={_yaml_scalar(spec)}")
    for override in parser.parse_overrides([*lines, *arguments]):
        name = _param_name(override)
        space.distributions.pop(name, None)
        space.fixed.pop(name, None)
        if override.is_sweep_override():
            space.distributions[name] = distribution_from_override(override)
            space.keys[name] = override.get_key_element()
        else:
            space.fixed[name] = override.input_line.strip()
    return space


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, (list, tuple, ListConfig)):
        return "[" + ",".join(_yaml_scalar(v) for v in value) + "]"
    return format_value(value) if not isinstance(value, str) else value


def quote(value: str) -> str:
    """A string as a single-quoted Hydra override value (backslashes doubled only before a quote or the end)."""
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


def format_value(value: Any) -> str:
    """A sampled value as a Hydra override value that parses back to the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return quote(str(value))


def trial_overrides(trial: Trial | FrozenTrial, space: SearchSpace) -> list[str]:
    """The job overrides of a trial: its sampled values, then the fixed overrides."""
    sampled = [f"{space.keys.get(name, name)}={format_value(value)}" for name, value in trial.params.items()]
    return [*sampled, *space.fixed.values()]
