"""A child process for the cross-process S3 tests (run as a script, never collected).

    python s3_child.py URL SIZE SEED MODE

Writes the deterministic blob ``random.Random(SEED).randbytes(SIZE)`` into the store at URL:

- ``MODE=kill``: writes all but the last MiB, prints ``ready <current_size>`` and sleeps until
  it is killed (the test sends SIGKILL: no close, no release, the buffered part is lost). A
  direct write (``staging=direct``) records its upload after every part here, so that what a
  later writer keeps does not depend on the blob reaching the record interval;
- ``MODE=hold``: takes the writer, prints ``ready``, waits for a line on stdin, then closes the
  writer and prints ``closed``;
- ``MODE=freeze``: writes one part and a MiB more, prints ``ready``, waits for a line on stdin
  (the test stops the process meanwhile, past its lease), writes the rest and commits; prints
  ``committed``, or ``failed <error type>: <message>`` and closes the writer.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time

from regstore import open_store

import regstore_s3.direct


def blob_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def main() -> None:
    url, size_text, seed_text, mode = sys.argv[1:5]
    data = blob_bytes(int(size_text), int(seed_text))
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    regstore_s3.direct.RECORD_EVERY = 1
    store = open_store(url)
    writer = store.layer(digest).writer()
    writer.set_size(len(data))
    if mode == "kill":
        stop = len(data) - 1024 * 1024
        for start in range(0, stop, 256 * 1024):
            writer.write(data[start : min(start + 256 * 1024, stop)])
        print(f"ready {store.blob_status(digest).current_size}", flush=True)
        while True:
            time.sleep(60)
    elif mode == "hold":
        print("ready", flush=True)
        sys.stdin.readline()
        writer.close()
        print("closed", flush=True)
    elif mode == "freeze":
        first = 6 * 1024 * 1024
        writer.write(data[:first])
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            writer.write(data[first:])
            writer.commit()
        except Exception as exc:
            print(f"failed {type(exc).__name__}: {exc}", flush=True)
            writer.close()
        else:
            print("committed", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
