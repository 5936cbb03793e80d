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

((EUID == 0)) || die "the tests start dockerd, containerd and kubelet; run them as root"

VENV=${GA_VENV:-$GA_CACHE/venv}

python_env() {
	local py stamp
	py=$(command -v python3) || die "python3 is not installed"
	"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "gefyra-async needs Python >= 3.11; $py is $("$py" -V 2>&1)"
	if [[ ! -x $VENV/bin/python ]]; then
		log "creating the virtualenv $VENV"
		if ! "$py" -m venv "$VENV" >/dev/null 2>&1; then
			# Debian's own python3 ships venv separately.
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null ||
				die "python3 -m venv failed and python3-venv could not be installed"
			rm -rf "$VENV"
			"$py" -m venv "$VENV" || die "creating the virtualenv $VENV failed"
		fi
	fi
	# Reinstall when the dependencies or the checkout's location change.
	stamp=$(printf '%s\n' "$REPO" "$(sha256sum "$REPO/pyproject.toml")" | sha256sum | cut -c1-16)
	if [[ $(cat "$VENV/.ga-stamp" 2>/dev/null) != "$stamp" ]]; then
		log "installing gefyra-async and its dev tools into $VENV"
		"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
		"$VENV/bin/python" -m pip install -q -e "$REPO[dev]" || die "pip install failed"
		echo "$stamp" >"$VENV/.ga-stamp"
	fi
}

main() {
	local t0=$SECONDS
	bash "$REPO/tests/platform/platform.sh" up
	python_env
	cd "$REPO"
	local bin=$VENV/bin
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
