"""What the content key of the caches costs (dermlit/data/fingerprint.py): a first read of every
file's bytes (a re-copied dataset) against a memo hit (an unchanged one: one stat per file),
repeated in one process, so that the page cache's effect shows in the first rounds.

    python benchmarks/fingerprint_speed.py ../shared/data/ham10000-200x150 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dermlit.data.fingerprint import content_fingerprint
from dermlit.data.sources import HAM10000Source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="a HAM10000 folder")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    df = HAM10000Source(args.root).load()[0]
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as memo:
            start = time.perf_counter()
            content_fingerprint(df, memo)  # no memo yet: every file is read
            read = time.perf_counter() - start
            start = time.perf_counter()
            content_fingerprint(df, memo)
            hit = time.perf_counter() - start
        print(f"round {round_}: {len(df)} images, bytes read {read:.2f} s, memo hit {hit:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
