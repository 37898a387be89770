"""`python -m contrastive.bench [overrides]`: see contrastive/bench/__init__.py."""

from contrastive.bench import main

main()
