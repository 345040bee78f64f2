"""Moved to :mod:`tests.support.cli`; kept so older imports still work."""

from tests.support.cli import *  # noqa: F403
from tests.support.cli import SeededRegistry, cli_env, flip_byte, only_lines, tag_digests  # noqa: F401
from tests.support.cli import seed_app_images as seed_registry  # noqa: F401
