"""Moved to :mod:`tests.support.engine`; kept so older imports still work."""

from tests.support.engine import *  # noqa: F403
from tests.support.engine import env_without_ca_bundle, iter_json, raw_manifest  # noqa: F401
