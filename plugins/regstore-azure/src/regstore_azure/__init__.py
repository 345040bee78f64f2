"""regstore-azure: the ``az://container/prefix`` store backend for regstore, on adlfs.

Installed alongside regstore (``pip install regstore-azure``), this module is found through the
``regstore`` entry-point group and registers the ``az`` and ``abfs`` URL schemes::

    from regstore import open_store
    store = open_store("az://mirror/images?account_name=myaccount")   # DefaultAzureCredential
    store = open_store("az://mirror/oci?layout=oci")  # AZURE_STORAGE_CONNECTION_STRING

The backend itself (:mod:`regstore_azure.backend`, which imports adlfs and the Azure SDK) is
loaded only when an Azure store is opened, so every other regstore command stays quick.
"""

from __future__ import annotations

from typing import Any

from regstore.backends.kit import Register, hookimpl

__all__ = ["open_backend", "regstore_register_backends"]

__version__ = "0.1.0"


def open_backend(url: str, **options: Any) -> Any:
    """Open the Azure store at ``url`` (see :func:`regstore_azure.backend.open_backend`)."""
    from .backend import open_backend as _open

    return _open(url, **options)


@hookimpl
def regstore_register_backends(register: Register) -> None:
    """Register ``az://`` and ``abfs://``."""
    description = "Azure Blob Storage (adlfs; layouts distribution, oci)"
    register("az", open_backend, description)
    register("abfs", open_backend, description)
