"""The loop of a full sync's row-building helper process (see `workers.ConversionProcess`).

A module of its own so the helper imports what building rows needs (`objects`, pyarrow, orjson) and nothing else:
no DuckDB, no HTTP client. Each helper of a large sync is a Python of its own, so every import counts per helper.
"""

from __future__ import annotations

import gc
import pickle
import signal
import struct
import sys

from segflow_pipeline.stripe_api import objects
from segflow_pipeline.stripe_api.errors import UnexpectedBody


def serve_conversions() -> None:
    """Length-prefixed pickles of (kind, body, integration, context, single) in on stdin, pickled answers out."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Ctrl-C reaches the whole process group: the sync decides how to stop, and closes our stdin when it does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A page's dicts hold no reference cycles and are freed as soon as its rows are built; the cyclic collector
    # would only rescan them (a third of the time per page). It still runs now and then, for safety.
    gc.disable()
    pages = 0
    while True:
        pages += 1
        if pages % 500 == 0:
            gc.collect()
        header = stdin.read(8)
        if len(header) < 8:
            return
        kind, body, integration, context, single = pickle.loads(stdin.read(struct.unpack("<Q", header)[0]))
        try:
            answer: tuple = ("ok", objects.page_rows(kind, body, integration, context, single=single))
        except UnexpectedBody as exc:  # the body is wrong, not this process: the sync reports it as is
            answer = ("unexpected", str(exc))
        except Exception as exc:  # answered, so the parent converts this page itself and says why
            answer = ("error", f"{exc.__class__.__name__}: {exc}")
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(struct.pack("<Q", len(data)) + data)
        stdout.flush()
