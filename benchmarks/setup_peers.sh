#!/usr/bin/env bash
# Install the recipe benchmark's peers (DVC, MLflow, git-lfs) apart from the
# project: DVC and MLflow go into their own virtual environment,
# benchmarks/.venv-peers, never into .venv; git-lfs comes from Debian.
# bench_recipe.py drives them as separate processes on files it writes with
# torch.save, so torch is not needed here. Idempotent: a second run only
# checks. Usage: bash benchmarks/setup_peers.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"
stamp="$venv/.installed"

if [ ! -f "$stamp" ]; then
	test -x "$venv/bin/python" || "$python" -m venv "$venv"
	# keep the environment out of git even where .gitignore does not name it
	echo '*' >"$venv/.gitignore"
	"$venv/bin/pip" install --quiet --upgrade pip
	"$venv/bin/pip" install --quiet dvc mlflow
	touch "$stamp"
fi

if ! command -v git-lfs >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		apt-get install -y -qq git-lfs >/dev/null 2>&1 || {
			apt-get update -qq && apt-get install -y -qq git-lfs
		}
	else
		echo "warning: git-lfs is missing; install Debian's 'git-lfs' package" >&2
	fi
fi

# telemetry stays off whenever these tools run from here
export DVC_NO_ANALYTICS=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
echo "dvc $("$venv/bin/dvc" --version)"
echo "mlflow $("$venv/bin/python" -c 'import mlflow; print(mlflow.__version__)')"
command -v git-lfs >/dev/null 2>&1 && git lfs version || true
