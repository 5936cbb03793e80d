#!/usr/bin/env bash
# The project's test command: `bash tests/run.sh`, as root (README; .ci/run calls exactly this).
#
# Brings up the local platform (tests/platform/platform.sh up: Docker engine, Kubernetes,
# images), prepares the Python environment, then runs the linters and every test, the
# e2e tests against the real platform included. Exits non-zero on any failure.
# Extra arguments go to pytest (e.g. `tests/run.sh tests/unit -k dns`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=platform/lib/common.sh
source "$REPO/tests/platform/lib/common.sh"
# shellcheck source=platform/lib/python.sh
source "$REPO/tests/platform/lib/python.sh"

((EUID == 0)) || die "the tests start dockerd, containerd and kubelet; run them as root"

main() {
	local t0=$SECONDS
	bash "$REPO/tests/platform/platform.sh" up
	python_env
	cd "$REPO"
	local bin=$GA_VENV/bin
	log "ruff"
	"$bin/ruff" check .
	"$bin/ruff" format --check .
	log "mypy"
	"$bin/mypy"
	log "import-linter"
	"$bin/lint-imports"
	log "pytest"
	"$bin/python" -m pytest "$@"
	log "all checks and tests passed in $((SECONDS - t0))s"
}

main "$@"
