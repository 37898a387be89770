"""Early checks of config values: each problem is a one-line ConfigError naming the key and the value."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from contrastive.errors import ConfigError

SAMPLERS = ("component", "no_duplicates", "random")
AUX_LOSSES = ("cosine", "cosent", "online_contrastive")
INTERLEAVE = ("proportional", "round_robin")


def _need(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_train_config(cfg: DictConfig) -> None:
    """Reject values that would fail or mislead later, before any data is read or any model loaded."""
    loss, batch, trainer, ev = cfg.loss, cfg.batch, cfg.trainer, cfg.eval
    _need(_number(loss.aux_weight) and loss.aux_weight >= 0, "loss.aux_weight", loss.aux_weight, "must be >= 0")
    _need(_number(loss.aux_share) and 0 < loss.aux_share <= 1, "loss.aux_share", loss.aux_share, "must be in (0, 1]")
    _need(_number(loss.scale) and loss.scale > 0, "loss.scale", loss.scale, "must be > 0")
    _need(loss.aux in AUX_LOSSES, "loss.aux", loss.aux, f"choose one of {', '.join(AUX_LOSSES)}")
    _need(loss.interleave in INTERLEAVE, "loss.interleave", loss.interleave, f"choose one of {', '.join(INTERLEAVE)}")
    _need(isinstance(loss.hard_negatives, bool), "loss.hard_negatives", loss.hard_negatives, "must be true or false")
    _need(isinstance(loss.cached, bool), "loss.cached", loss.cached, "must be true or false")
    _need(
        _integer(loss.mini_batch_size) and loss.mini_batch_size >= 1,
        "loss.mini_batch_size",
        loss.mini_batch_size,
        "must be an integer >= 1",
    )
    _need(
        _integer(batch.size) and batch.size >= 2,
        "batch.size",
        batch.size,
        "MNRL needs at least 2 examples per batch (in-batch negatives)",
    )
    _need(batch.sampler in SAMPLERS, "batch.sampler", batch.sampler, f"choose one of {', '.join(SAMPLERS)}")
    _need(_number(trainer.lr) and trainer.lr > 0, "trainer.lr", trainer.lr, "must be > 0")
    _need(
        _number(trainer.max_grad_norm) and trainer.max_grad_norm > 0,
        "trainer.max_grad_norm",
        trainer.max_grad_norm,
        "must be > 0",
    )
    _need(_number(trainer.epochs) and trainer.epochs > 0, "trainer.epochs", trainer.epochs, "must be > 0")
    _need(_integer(trainer.max_steps), "trainer.max_steps", trainer.max_steps, "must be an integer")
    _need(
        _number(trainer.warmup_ratio) and 0 <= trainer.warmup_ratio < 1,
        "trainer.warmup_ratio",
        trainer.warmup_ratio,
        "must be in [0, 1)",
    )
    _need(
        _number(trainer.weight_decay) and trainer.weight_decay >= 0,
        "trainer.weight_decay",
        trainer.weight_decay,
        "must be >= 0",
    )
    _need(
        _integer(trainer.eval_steps) and trainer.eval_steps >= 0,
        "trainer.eval_steps",
        trainer.eval_steps,
        "must be an integer >= 0",
    )
    _need(
        _integer(trainer.eval_every_examples) and trainer.eval_every_examples >= 0,
        "trainer.eval_every_examples",
        trainer.eval_every_examples,
        "must be an integer >= 0",
    )
    _need(
        _integer(trainer.logging_steps) and trainer.logging_steps >= 1,
        "trainer.logging_steps",
        trainer.logging_steps,
        "must be an integer >= 1",
    )
    max_pairs = cfg.data.get("max_pairs")
    _need(
        max_pairs is None or (_integer(max_pairs) and max_pairs > 0),
        "data.max_pairs",
        max_pairs,
        "must be null or a positive integer",
    )
    _need(ev.split in ("train", "val", "test"), "eval.split", ev.split, "choose train, val or test")
    _need(_integer(ev.k) and ev.k >= 1, "eval.k", ev.k, "must be an integer >= 1")
    _need(_integer(ev.n_boot) and ev.n_boot >= 0, "eval.n_boot", ev.n_boot, "must be an integer >= 0")
    _need(_number(ev.ci) and 0 < ev.ci < 1, "eval.ci", ev.ci, "must be in (0, 1)")
