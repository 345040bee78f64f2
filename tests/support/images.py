"""Moved to :mod:`regstore.testing.builders` (one image library); kept so older imports work."""

from regstore.testing.builders import *  # noqa: F403
from regstore.testing.builders import Built  # noqa: F401
