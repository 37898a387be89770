"""The typed schema of conf/reproduce.yaml (`make reproduce`): ablation rows, sweep, test protocol, targets, merge,
and the loader."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig

from contrastive.settings import (
    MERGE_METHODS,
    SPLITS,
    PathSettings,
    is_integer,
    load,
    need,
    need_bool,
    need_choice,
    need_finite,
    need_int,
    register_top,
)


@dataclass
class AblationRow:
    name: str = MISSING
    label: str = MISSING
    set: list[str] = field(default_factory=list)
    from_best: list[str] = field(default_factory=list)
    eval_only: bool = False  # no training of its own: the previous row's run, saved as this row's model.interpolate


@dataclass
class ReproduceSweep:
    config: str = "reproduce"
    overrides: list[str] = field(default_factory=list)


@dataclass
class ReproduceTest:
    split: str = "test"
    distractors: str = "train"
    max_distractors: int | None = 20000
    n_boot: int = 1000

    def __post_init__(self) -> None:
        need_choice(self.split, "reproduce.test.split", SPLITS)
        need_int(self.max_distractors, "reproduce.test.max_distractors", 0, nullable=True)
        need_int(self.n_boot, "reproduce.test.n_boot", 1)


@dataclass
class ReproduceTargets:
    pair_ap_min_delta: float = 0.04
    mrr_metric: str = "mrr_at_10"
    mrr_min_delta: float = 0.01

    def __post_init__(self) -> None:
        need_finite(self.pair_ap_min_delta, "reproduce.targets.pair_ap_min_delta", "must be a number")
        need_finite(self.mrr_min_delta, "reproduce.targets.mrr_min_delta", "must be a number")


@dataclass
class ReproduceMerge:
    """conf/reproduce.yaml's `reproduce.merge`: a soup of the final model and other ablation rows' models."""

    enabled: bool = True
    method: str = "greedy"
    rows: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        need_bool(self.enabled, "reproduce.merge.enabled")
        need_choice(self.method, "reproduce.merge.method", MERGE_METHODS)


@dataclass
class ReproduceBlock:
    """conf/reproduce.yaml's `reproduce` block: stages, budget, test protocol, targets, ablation rows."""

    results_dir: str = MISSING
    work_dir: str = MISSING
    readme: str = MISSING
    recipe: str | None = None  # conf/recipe/best.yaml: the promoted recipe `make train` trains (null: not written)
    fresh: bool = False
    data: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    sweep: ReproduceSweep = field(default_factory=ReproduceSweep)
    budget_pairs: int | None = None
    test: ReproduceTest = field(default_factory=ReproduceTest)
    targets: ReproduceTargets = field(default_factory=ReproduceTargets)
    ablation: list[AblationRow] = field(default_factory=list)
    merge: ReproduceMerge = field(default_factory=ReproduceMerge)

    def __post_init__(self) -> None:
        budget = self.budget_pairs
        need(
            budget is None or (is_integer(budget) and budget >= 1),
            "reproduce.budget_pairs",
            budget,
            "must be null (all train pairs) or an integer >= 1",
        )
        rows = list(self.ablation)
        need(
            bool(rows), "reproduce.ablation", rows, "empty; the last row is the final model, so at least one is needed"
        )
        for i, row in enumerate(rows):
            for key in ("name", "label"):
                value = getattr(row, key)
                need(
                    isinstance(value, str) and value != "",
                    f"reproduce.ablation[{i}].{key}",
                    value,
                    "must be a non-empty string",
                )
        names = [r.name for r in rows]
        need(len(set(names)) == len(names), "reproduce.ablation", names, "row names repeat")
        for i, row in enumerate(rows):
            if row.eval_only:
                need(
                    i > 0 and not rows[i - 1].eval_only,
                    f"reproduce.ablation[{i}].eval_only",
                    row.eval_only,
                    "needs a trained row just above it (not the first row, not after another eval_only row)",
                )
        for i, name in enumerate(self.merge.rows):
            at = names.index(name) if name in names else -1
            saved = 0 <= at < len(rows) - 1 and not rows[at + 1].eval_only  # the row above an eval_only row has none
            need(
                saved,
                f"reproduce.merge.rows[{i}]",
                name,
                f"must name an ablation row with a model of its own other than the final one ({', '.join(names[:-1])}"
                "; not the row just above an eval_only row)",
            )


@dataclass
class ReproduceSettings:
    """conf/reproduce.yaml: `make reproduce`."""

    paths: PathSettings = MISSING
    reproduce: ReproduceBlock = MISSING


register_top("reproduce", ReproduceSettings)


def load_reproduce(cfg: DictConfig) -> ReproduceSettings:
    """The settings of `make reproduce` (conf/reproduce.yaml)."""
    return load(cfg, ReproduceSettings)
