"""Progress of a transfer: the aggregated ``Progress`` sink, and a callback that raises."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from regstore import ObjectStore
from regstore.client import Client
from regstore.engine import Progress, pull
from regstore.events import TransferEvent
from regstore.testing.builders import build_index
from tests.support.engine import seed_registry
from tests.support.registry import RegistryServer


def test_progress_totals_after_a_pull_equal_the_images_blobs_and_bytes(
    registry: RegistryServer, store_factory: Callable[[str], ObjectStore]
) -> None:
    index = build_index(media="oci", seed=71, layers=2, layer_size=3000)
    seed_registry(registry.url, "prog/img", "1", index)
    progress = Progress()

    pull(Client(registry.host), store_factory("memory"), "prog/img", "1", events=progress)

    snap = progress.snapshot()
    size = sum(len(data) for data in index.blobs.values())
    assert snap.blobs_total == snap.blobs_done == len(index.blobs)
    assert snap.bytes_total == snap.bytes_done == size
    assert snap.blobs_failed == 0 and snap.manifests == 1 + len(index.children)
    (image,) = snap.images.values()
    assert image.bytes_done == size
    with pytest.raises(AttributeError):
        snap.bytes_done = 0  # type: ignore[misc]  # frozen


def test_a_callback_that_raises_is_logged_once_and_the_pull_completes(
    registry: RegistryServer,
    store_factory: Callable[[str], ObjectStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    index = build_index(media="oci", seed=72, layers=2, layer_size=2000)
    seed_registry(registry.url, "prog/bad", "1", index)
    store = store_factory("memory")
    calls: list[TransferEvent] = []

    def broken(event: TransferEvent) -> None:
        calls.append(event)
        raise RuntimeError("observer bug")

    with caplog.at_level(logging.INFO, logger="regstore"):
        result = pull(Client(registry.host), store, "prog/bad", "1", events=broken)

    assert result.manifest_digest == index.manifest_digest
    assert store.manifest("prog/bad", "1").raw == index.manifest_bytes
    assert len(calls) > 5  # the callback kept being called
    failures = [r for r in caplog.records if "observer failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_warnings_show_without_verbose_and_above_live_bars() -> None:
    # a NullHandler swallowed every warning of regstore without -v; with bars drawn, a line
    # written straight to stderr lands in the middle of them
    import io

    from regstore.cli.app import configure_logging
    from regstore.cli.output import Output
    from regstore.cli.progress import ProgressDisplay, live

    stderr = io.StringIO()
    configure_logging(0, Output(stderr=stderr))
    log = logging.getLogger("regstore.engine")
    log.warning("plain %s", "warning")
    assert stderr.getvalue() == "regstore: warning: plain warning\n"
    logging.getLogger("regstore.plugins").warning("broken plugin")
    assert "broken plugin" not in stderr.getvalue()  # the plugins command says it
    bars = io.StringIO()
    with ProgressDisplay("bars", bars) as display:
        assert live == [display]
        log.warning("while drawing")
    assert live == []
    assert "while drawing" not in stderr.getvalue().split("plain warning")[1]
    assert "regstore: warning: while drawing" in bars.getvalue()
