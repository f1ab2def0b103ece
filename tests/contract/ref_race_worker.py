"""One side of a two-process compare-and-set race (run by test_ref_store).

Usage: python ref_race_worker.py KIND LOCATION START_TIME SPEC_JSON

SPEC_JSON lists rounds ``[ref, old_hex, new_hex]``. Round k starts at
START_TIME + k * GAP seconds, so both processes move the same ref from the
same epoch at the same moment. Prints one JSON line per round: who won, or
the conflict's attributes.
"""

from __future__ import annotations

import json
import sys
import time

import servers

from mvcstore.codec import ObjectId
from mvcstore.errors import RefConflictError

GAP = 0.15


def main() -> None:
    kind, location, start, spec = sys.argv[1:5]
    refs, _, closer = servers.open_ref_store(kind, location)
    rounds = json.loads(spec)
    results = []
    try:
        for number, (ref, old, new) in enumerate(rounds):
            pause = float(start) + number * GAP - time.time()
            if pause > 0:
                time.sleep(pause)
            try:
                refs.compare_and_set(
                    ref,
                    old=ObjectId.from_hex(old),
                    new=ObjectId.from_hex(new),
                    message="race",
                )
            except RefConflictError as exc:
                results.append(
                    {
                        "ref": ref,
                        "won": False,
                        "actual": exc.actual,
                        "proposed": exc.proposed,
                    }
                )
            else:
                results.append({"ref": ref, "won": True})
    finally:
        closer.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
