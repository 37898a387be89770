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


def _eval_protocol(ev) -> str:
    from contrastive.train import eval_protocol

    return eval_protocol(ev)


def _data_fingerprint(data) -> str:
    from contrastive.data import prepare  # loads and validates the data: resolve it once, in the sweep process
    from contrastive.settings import DataSettings, load

    resolved = OmegaConf.create(OmegaConf.to_container(data, resolve=True))  # its own interpolations, in place
    return prepare(load(resolved, DataSettings)).fingerprint


# A sweep's warm start matches recorded runs on these (sweeps/full_fidelity.yaml): ${eval_protocol:${eval}}
for _name, _resolver in (("eval_protocol", _eval_protocol), ("data_fingerprint", _data_fingerprint)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)

# The typed schema of conf/ (contrastive/settings.py) must be in Hydra's ConfigStore before any composition.
from contrastive.settings import register as _register_schemas  # noqa: E402

_register_schemas()
