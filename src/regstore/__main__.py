"""``python -m regstore``: the command line."""

from __future__ import annotations

from regstore.cli import main

if __name__ == "__main__":
    main()
