"""Registers contrastive's Optuna sweeper with Hydra, which only instantiates plugins under `hydra_plugins`.

`hydra.sweeper._target_: hydra_plugins.contrastive_sweeper.OptunaSweeper` (conf/hydra/sweeper/optuna.yaml).
"""

from contrastive.sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """contrastive.sweeper.OptunaSweeper under the name Hydra's plugin registry accepts."""
