"""Test helpers for regstore and its plugins.

- :mod:`regstore.testing.conformance`: the backend conformance suite (subclass
  ``BackendConformance`` in a plugin's tests);
- :mod:`regstore.testing.builders`: small deterministic images of every manifest kind;
- :mod:`regstore.testing.pytest_plugin`: fixtures every pytest run gets once regstore is
  installed (``regstore_memory_url``, ``regstore_memory_store``).

This package imports nothing at import time, so loading the pytest plugin stays cheap and
assertion rewriting can still be registered for the suite's modules.
"""
