# shellcheck shell=bash
# Shared settings and helpers of the local platform scripts. Sourced, never run.

PLATFORM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$PLATFORM_DIR/../.." && pwd)

# Versions. Kubernetes: newest 1.35.x on the Go module proxy (1.35.7 is not served there).
K8S_VERSION=${K8S_VERSION:-1.35.8}
COREDNS_VERSION=1.14.7
DEBIAN_SUITE=bookworm
# DEBIAN_MIRROR: the machine's own apt source for $DEBIAN_SUITE (debian_mirror below),
# unless set in the environment.

# Caches survive `down` and live outside the checkout, so a second `up` takes minutes.
GA_CACHE=${GA_CACHE:-/var/cache/gefyra-async}
# Cluster state, wiped by `down`.
GA_STATE=${GA_STATE:-/var/lib/gefyra-async-platform}
GA_RUN=${GA_RUN:-/run/gefyra-async-platform}
GA_LOG=${GA_LOG:-/var/log/gefyra-async-platform}

# Go from the machine's /usr/local/go when it is not on PATH already.
[[ -d /usr/local/go/bin ]] && PATH=$PATH:/usr/local/go/bin
export GOTOOLCHAIN=local
export GOMODCACHE=$GA_CACHE/go/mod
export GOCACHE=$GA_CACHE/go/build
export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export DOCKER_BUILDKIT=0

BIN=$GA_CACHE/bin/k8s-$K8S_VERSION
PKI=$GA_STATE/pki
KCFG=$GA_STATE/kubeconfig
ADMIN_KUBECONFIG=$GA_STATE/admin.kubeconfig
CONTAINERD_SOCK=$GA_RUN/containerd/containerd.sock
DOCKER_SOCK=/var/run/docker.sock

NODE_NAME=gefyra-async-node
POD_CIDR=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
CLUSTER_DNS=10.96.0.10
# Reserved for the project's WireGuard tunnels; guarded like the cluster ranges.
TUNNEL_CIDR=10.250.0.0/16
# Where gefyra-async puts its connection networks (SUBNET_POOL in adapters/containers.py).
CONNECTION_CIDR=172.30.0.0/16

# The platform's registry (Debian's docker-registry on loopback): the product images live
# there, pushed by `gefyra-async images build --push`; Docker and containerd pull from it
# (plain HTTP, as both allow for a loopback registry).
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY=localhost:5000
PRODUCT_REGISTRY=$REGISTRY/gefyra-async
# Where the platform keeps its own builds of the product images (local names only).
BUILD_PREFIX=gefyra-async-build
# Side-loaded images (the base, CoreDNS, the demo): names must be fully qualified and
# never :latest, or kubelet tries to pull.
IMAGE_PREFIX=registry.local/gefyra-async
PAUSE_IMAGE=registry.k8s.io/pause:3.10
BASE_IMAGE=$IMAGE_PREFIX/base:$DEBIAN_SUITE-1
COREDNS_IMAGE=$IMAGE_PREFIX/coredns:$COREDNS_VERSION
DEMO_IMAGE=$IMAGE_PREFIX/demo-echo:1
# Packages the base image carries: enough for the demo server and in-pod network work.
BASE_PACKAGES=python3,iproute2,iptables,procps,netcat-openbsd,ca-certificates

KUBECTL="$BIN/kubectl --kubeconfig=$ADMIN_KUBECONFIG"
CTR="ctr --address $CONTAINERD_SOCK --namespace k8s.io"

log() { printf '\033[1m[platform %s]\033[0m %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '\033[31m[platform] error:\033[0m %s\n' "$*" >&2; exit 1; }

# Print the last lines of a daemon's log, so a failure says why.
show_log() {
	local name=$1 n=${2:-40}
	if [[ -f $GA_LOG/$name.log ]]; then
		printf '%s\n' "---- last $n lines of $GA_LOG/$name.log ----" >&2
		tail -n "$n" "$GA_LOG/$name.log" >&2
		printf '%s\n' "---- end of $name.log ----" >&2
	fi
}

# pid_alive NAME: the pid file names a live process that runs the program it was
# started with (after a crash or reboot, the pid may belong to something else).
pid_alive() {
	local f=$GA_RUN/$1.pid pid prog
	[[ -f $f ]] || return 1
	{ read -r pid; read -r prog; } <"$f" || true
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	[[ -z $prog ]] || [[ $(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n1) == "$prog" ]]
}

daemon_pid() { head -n1 "$GA_RUN/$1.pid"; }

# start_daemon NAME CMD... : start in its own session with a pid file; reuse if running.
start_daemon() {
	local name=$1; shift
	if pid_alive "$name"; then
		log "$name already running (pid $(daemon_pid "$name"))"
		return 0
	fi
	mkdir -p "$GA_RUN" "$GA_LOG"
	log "starting $name"
	# 9>&-: the daemon must not inherit the lock `up` holds.
	setsid "$@" >>"$GA_LOG/$name.log" 2>&1 </dev/null 9>&- &
	printf '%s\n%s\n' $! "$1" >"$GA_RUN/$name.pid"
}

# wait_for NAME SECONDS CMD... : poll CMD until it succeeds; on timeout show NAME's log and die.
wait_for() {
	local name=$1 secs=$2; shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [[ -f $GA_RUN/$name.pid ]] && ! pid_alive "$name"; then
			show_log "$name"
			die "$name exited during start-up; see $GA_LOG/$name.log"
		fi
		if ((SECONDS >= deadline)); then
			show_log "$name"
			die "$name was not ready after ${secs}s; see $GA_LOG/$name.log"
		fi
		sleep 1
	done
}

stop_daemon() {
	local name=$1 f=$GA_RUN/$1.pid pid
	[[ -f $f ]] || return 0
	pid=$(daemon_pid "$name")
	if pid_alive "$name"; then
		log "stopping $name (pid $pid)"
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

# write_if_changed FILE: stdin becomes FILE's content, but FILE is only replaced when the
# content differs. kube-proxy exits when its config file changes under it, and a
# running daemon should never see a config it was not started with.
write_if_changed() {
	local file=$1 tmp
	tmp=$(mktemp "$file.XXXXXX")
	cat >"$tmp"
	if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
		rm -f "$tmp"
	else
		mv "$tmp" "$file"
	fi
}

node_ip() {
	local dev
	dev=$(ip -4 route show default | awk '{for (i=1;i<NF;i++) if ($i=="dev") print $(i+1); exit}')
	[[ -n $dev ]] || die "no default route: cannot choose the node IP"
	ip -4 -o addr show dev "$dev" | awk '{print $4}' | cut -d/ -f1 | head -n1
}

# The Debian mirror debootstrap uses: $DEBIAN_MIRROR if set, else the first apt source of
# this machine that serves the suite's main component (one-line .list or deb822 .sources).
debian_mirror() {
	if [[ -n ${DEBIAN_MIRROR:-} ]]; then
		echo "$DEBIAN_MIRROR"
		return 0
	fi
	local found
	found=$(python3 "$PLATFORM_DIR/tools/apt_mirror.py" "$DEBIAN_SUITE") ||
		die "no apt source of this machine serves Debian $DEBIAN_SUITE main; set DEBIAN_MIRROR=URL"
	echo "$found"
}

uplink_dev() {
	ip -4 route show default | awk '{for (i=1;i<NF;i++) if ($i=="dev") print $(i+1); exit}'
}
