"""A 1 GiB layer through an Azure store in bounded memory (under ``--long``; 96 MiB otherwise).

The conformance suite's memory check (64 MiB) runs in every layout; this one moves a whole
large layer through the public writer and reader in a fresh process and reads its peak
resident memory (``VmHWM``): the writer holds one 4 MiB block, the reader adlfs's 4 MiB
read-ahead. Measured on Azurite: a 1 GiB layer peaks about 25 MiB above the process's
baseline (about 85 MiB in all), in about 35 s; the bound below leaves room for a busy machine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
from tests.support.long import is_long

MiB = 1024 * 1024
#: the allowed growth of the peak resident memory over the baseline, whatever the layer size
ALLOWED_GROWTH = 64 * MiB

CHILD = r"""
import hashlib, sys
from regstore import open_store

def vm(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise SystemExit("no " + field)

url, size = sys.argv[1], int(sys.argv[2])
chunk = bytes(range(256)) * 4096  # 1 MiB, the same in every run
digest = hashlib.sha256()
for _ in range(size // len(chunk)):
    digest.update(chunk)
name = "sha256:" + digest.hexdigest()
store = open_store(url)
store.blob_status(name)  # clients and connections set up before the baseline
baseline = vm("VmRSS:")
writer = store.layer(name).writer()
writer.set_size(size)
for _ in range(size // len(chunk)):
    writer.write(chunk)
writer.commit()
check = hashlib.sha256()
with store.layer(name).reader() as reader:
    while True:
        data = reader.read(MiB)
        if not data:
            break
        check.update(data)
assert "sha256:" + check.hexdigest() == name
print(baseline, vm("VmHWM:"))
""".replace("MiB)", f"{MiB})")


def test_a_large_layer_moves_through_bounded_memory(
    azure_url_factory: Callable[..., str], request: pytest.FixtureRequest
) -> None:
    size = 1024 * MiB if is_long(request.config) else 96 * MiB
    url = azure_url_factory("memory")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(size)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    baseline, peak = (int(word) for word in done.stdout.split())
    assert peak - baseline < ALLOWED_GROWTH, (
        f"a {size // MiB} MiB layer took {(peak - baseline) // MiB} MiB above the baseline "
        f"({peak // MiB} MiB at its peak)"
    )
