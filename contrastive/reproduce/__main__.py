"""`python -m contrastive.reproduce [overrides]`: the entry point is `contrastive.reproduce.main`."""

from contrastive.reproduce import main

if __name__ == "__main__":
    main()
