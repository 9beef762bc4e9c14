"""``python -m token_worker``: the ``token-worker`` command, for hosts without the script."""

from .cli import main

if __name__ == "__main__":
    main()
