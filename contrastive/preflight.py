"""Checks that run before Hydra touches the disk: a Hydra callback (conf/*.yaml `hydra.callbacks.preflight`) that
refuses a run or sweep directory nobody can create, in one line, before Hydra's own `mkdir` raises a traceback.

Hydra turns a callback's Exception into a warning and goes on, so the refusal is printed here and leaves as
SystemExit(2) (a BaseException Hydra lets through), as `contrastive.cli.user_errors` would."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from contrastive.errors import ConfigError
from contrastive.settings import need_writable


def job_dir_key(config: DictConfig, directory: str) -> str:
    """The key to name for `directory`: `paths.output_root` when it lies under it (the knob a user sets)."""
    root = OmegaConf.select(config, "paths.output_root", default=None)
    if root and Path(directory).expanduser().absolute().is_relative_to(Path(str(root)).expanduser().absolute()):
        return "paths.output_root"
    return "hydra.run.dir"


class OutputCheck(Callback):
    """`hydra.run.dir` (a run) or `hydra.sweep.dir` (a multirun) must be creatable: a ConfigError otherwise."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(config, str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.check(config, str(config.hydra.sweep.dir), "hydra.sweep.dir")

    @staticmethod
    def check(config: DictConfig, directory: str, hydra_key: str) -> None:
        key = job_dir_key(config, directory)
        root = OmegaConf.select(config, "paths.output_root", default=None)
        named = key if key != "hydra.run.dir" else hydra_key
        try:
            need_writable(directory, named, root if named == "paths.output_root" else None)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
