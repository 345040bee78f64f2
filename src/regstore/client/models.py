"""The values the client returns (besides manifests and blob streams): they live in
:mod:`regstore.wire`, the leaf the client and the engine share, and are re-exported here."""

from __future__ import annotations

from regstore.wire import ManifestInfo, UploadSession, UploadStatus

__all__ = ["ManifestInfo", "UploadSession", "UploadStatus"]
