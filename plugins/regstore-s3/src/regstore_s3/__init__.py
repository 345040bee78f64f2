"""regstore-s3: the ``s3://bucket/prefix`` store backend for regstore, on s3fs.

Installed alongside regstore (``pip install regstore-s3``), this module is found through the
``regstore`` entry-point group and registers the ``s3`` URL scheme::

    from regstore import open_store
    store = open_store("s3://my-bucket/mirror", region="eu-west-1")
    store = open_store("s3://bucket/oci?endpoint_url=http://127.0.0.1:9000&layout=oci")

The backend itself (:mod:`regstore_s3.backend`, which imports s3fs and aiobotocore) is loaded
only when an ``s3://`` store is opened, so every other regstore command stays quick.
"""

from __future__ import annotations

from typing import Any

from regstore.hookspecs import Register, hookimpl

__all__ = ["open_backend", "regstore_register_backends"]

__version__ = "0.1.0"


def open_backend(url: str, **options: Any) -> Any:
    """Open the S3 store at ``url`` (see :func:`regstore_s3.backend.open_backend`)."""
    from .backend import open_backend as _open

    return _open(url, **options)


@hookimpl
def regstore_register_backends(register: Register) -> None:
    """Register ``s3://``."""
    register(
        "s3",
        open_backend,
        "Amazon S3 and S3-compatible object storage (s3fs; layouts distribution, oci)",
    )
