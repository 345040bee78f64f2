"""How much a registry may make the client do: bounds on listings and on unsized blobs.

A hostile or broken registry can page forever (a fresh ``Link: <...?last=N>`` each time) or
stream a blob of unknown length without end. :class:`ClientLimits` holds the bounds a
:class:`~regstore.client.Client` enforces; each is a constructor argument, else an environment
variable (so the command line can raise it too), else the default:

- ``max_pages`` (``REGSTORE_MAX_PAGES``, default 10,000): pages of one tag or catalog listing;
- ``max_list_entries`` (``REGSTORE_MAX_LIST_ENTRIES``, default 1,000,000): names one listing
  may receive, duplicates included;
- ``max_unknown_blob_size`` (``REGSTORE_MAX_UNKNOWN_BLOB_SIZE``, default 10 GiB): bytes of a
  blob whose length nobody announced.

The listing defaults are far above any real repository's (Docker Hub's largest have a few
hundred thousand tags, in pages of 100 or more) yet stop a hostile one within seconds of work
and megabytes of memory. The blob bound applies only when the size is known neither from the
manifest (schema1 has none) nor from the response (chunked transfer encoding).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from regstore.errors import UsageError

__all__ = [
    "DEFAULT_MAX_LIST_ENTRIES",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MAX_UNKNOWN_BLOB_SIZE",
    "ClientLimits",
    "how_to_raise",
]

DEFAULT_MAX_PAGES = 10_000
DEFAULT_MAX_LIST_ENTRIES = 1_000_000
DEFAULT_MAX_UNKNOWN_BLOB_SIZE = 10 << 30

#: option name -> the environment variable that sets it when the argument is not given
ENVIRONMENT = {
    "max_pages": "REGSTORE_MAX_PAGES",
    "max_list_entries": "REGSTORE_MAX_LIST_ENTRIES",
    "max_unknown_blob_size": "REGSTORE_MAX_UNKNOWN_BLOB_SIZE",
}


@dataclass(frozen=True)
class ClientLimits:
    """The bounds of one client (see the module docstring); every value is positive."""

    max_pages: int = DEFAULT_MAX_PAGES
    max_list_entries: int = DEFAULT_MAX_LIST_ENTRIES
    max_unknown_blob_size: int = DEFAULT_MAX_UNKNOWN_BLOB_SIZE

    def __post_init__(self) -> None:
        for option in ENVIRONMENT:
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{option} must be a positive integer, got {value!r}")

    @classmethod
    def resolve(
        cls,
        *,
        max_pages: int | None = None,
        max_list_entries: int | None = None,
        max_unknown_blob_size: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ClientLimits:
        """Arguments first, then ``REGSTORE_MAX_*`` variables, then the defaults.

        Raises:
            UsageError: a value (argument or variable) that is not a positive integer.
        """
        env = os.environ if environ is None else environ
        given = {
            "max_pages": max_pages,
            "max_list_entries": max_list_entries,
            "max_unknown_blob_size": max_unknown_blob_size,
        }
        chosen: dict[str, int] = {}
        for option, value in given.items():
            if value is None:
                text = env.get(ENVIRONMENT[option], "").strip()
                if not text:
                    continue
                try:
                    value = int(text.replace("_", ""))
                except ValueError:
                    raise UsageError(
                        f"{ENVIRONMENT[option]}={text!r} is not a whole number"
                    ) from None
                if value < 1:
                    raise UsageError(f"{ENVIRONMENT[option]}={text!r} must be positive")
            chosen[option] = value
        return cls(**chosen)


def how_to_raise(option: str) -> str:
    """The sentence an error ends with: where the bound ``option`` is set."""
    return f"raise it with Client({option}=...) or the environment variable {ENVIRONMENT[option]}"
