"""MLflow's side of the recipe benchmark, run by the peers' own Python.

``bench_recipe.py`` starts this with ``benchmarks/.venv-peers/bin/python``
(MLflow is not installed in the project's environment) and talks to it over
stdin and stdout, one line at a time, so that MLflow's import and run start
are paid once, untimed, as in a training script:

- at start it opens one run in the file store named by
  ``MLFLOW_TRACKING_URI`` and prints ``ready <artifact folder>``;
- ``log <path> <artifact_path>`` calls ``mlflow.log_artifact`` and prints
  ``ok``;
- ``end`` ends the run, prints ``ok`` and exits.

Telemetry must be off in its environment (the caller sets
``MLFLOW_ENABLE_TELEMETRY=false`` and ``DO_NOT_TRACK=1``).
"""

from __future__ import annotations

import sys
from urllib.parse import unquote, urlparse

import mlflow


def main() -> int:
    mlflow.set_experiment("recipe")
    run = mlflow.start_run()
    uri = run.info.artifact_uri
    folder = unquote(urlparse(uri).path) if uri.startswith("file:") else uri
    print(f"ready {folder}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "log":
            mlflow.log_artifact(words[1], artifact_path=words[2])
        elif words[0] == "end":
            mlflow.end_run()
            print("ok", flush=True)
            return 0
        else:
            print(f"error unknown command {words[0]!r}", flush=True)
            return 2
        print("ok", flush=True)
    mlflow.end_run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
