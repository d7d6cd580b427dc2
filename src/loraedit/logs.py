"""Logging for the workflow's script entry points: everything goes to the rule's `log:` file."""

from __future__ import annotations

import contextlib
import logging
import sys

from .errors import ClipError, SheetError


@contextlib.contextmanager
def snakemake_log(snakemake):
    """Send logging and stderr (tqdm bars, warnings) to `snakemake.log[0]`.

    A bad input (ClipError/SheetError) is written as its one-line message, and re-raised so the
    job fails with that line at the end of its log.
    """
    import torch

    # One intra-op thread per declared Snakemake thread: jobs run side by side, and oversubscribed
    # BLAS threads made small models ~10x slower on 2 cores.
    torch.set_num_threads(max(1, int(getattr(snakemake, "threads", 1) or 1)))
    path = snakemake.log[0] if snakemake.log else None
    stream = open(path, "w", buffering=1) if path else sys.stderr
    old_stderr = sys.stderr
    sys.stderr = stream
    logging.basicConfig(
        stream=stream, level=logging.INFO, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        yield logging.getLogger(f"loraedit.{snakemake.rule}")
    except (ClipError, SheetError) as e:
        print(f"ERROR: {e}", file=stream)
        print(f"ERROR: {e}", file=old_stderr)
        raise
    finally:
        sys.stderr = old_stderr
        if path:
            stream.close()
