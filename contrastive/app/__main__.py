"""`python -m contrastive.app [overrides]`: serve the app (contrastive.app.server.main)."""

from contrastive.app.server import main

main()
