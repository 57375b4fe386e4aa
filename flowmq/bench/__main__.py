"""``python -m flowmq.bench``: the same as the ``flowmq-bench`` command."""

from __future__ import annotations

import sys

from flowmq.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
