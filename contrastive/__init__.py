"""contrastive: Hydra experiment sweeps for contrastive fine-tuning of sentence embeddings on QQP."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

__version__ = "0.1.0"

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


def _help_lists(kind: str, config_name: str = "train") -> str:
    from contrastive.help import resolve  # only `--help` pays for it

    return resolve(kind, config_name)


if not OmegaConf.has_resolver("contrastive_help"):
    OmegaConf.register_new_resolver("contrastive_help", _help_lists)  # conf/hydra/help/*.yaml

# The typed schema of conf/ (contrastive/settings.py) must be in Hydra's ConfigStore before any composition.
from contrastive.settings import register as _register_schemas  # noqa: E402

_register_schemas()
