# shellcheck shell=bash
# The Python environment of the project (a virtualenv in the cache, the package
# installed editable with its dev tools). Sourced after common.sh.

GA_VENV=${GA_VENV:-$GA_CACHE/venv}

python_env() {
	local py stamp
	py=$(command -v python3) || die "python3 is not installed"
	"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
		die "gefyra-async needs Python >= 3.11; $py is $("$py" -V 2>&1)"
	if [[ ! -x $GA_VENV/bin/python ]]; then
		log "creating the virtualenv $GA_VENV"
		if ! "$py" -m venv "$GA_VENV" >/dev/null 2>&1; then
			# Debian's own python3 ships venv separately.
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null ||
				die "python3 -m venv failed and python3-venv could not be installed"
			rm -rf "$GA_VENV"
			"$py" -m venv "$GA_VENV" || die "creating the virtualenv $GA_VENV failed"
		fi
	fi
	# Reinstall when the dependencies or the checkout's location change.
	stamp=$(printf '%s\n' "$REPO_DIR" "$(sha256sum "$REPO_DIR/pyproject.toml")" | sha256sum | cut -c1-16)
	if [[ $(cat "$GA_VENV/.ga-stamp" 2>/dev/null) != "$stamp" ]]; then
		log "installing gefyra-async and its dev tools into $GA_VENV"
		{ "$GA_VENV/bin/python" -m pip install -q --upgrade pip &&
			"$GA_VENV/bin/python" -m pip install -q -e "$REPO_DIR[dev]"; } >"$GA_LOG/pip.log" 2>&1 ||
			{ show_log pip; die "pip install of gefyra-async into $GA_VENV failed"; }
		echo "$stamp" >"$GA_VENV/.ga-stamp"
	fi
}

