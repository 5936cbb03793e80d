# shellcheck shell=bash
# Installing Debian packages and building Kubernetes and CoreDNS from Go modules.

DEB_PACKAGES=(
	docker.io containerd runc containernetworking-plugins etcd-server
	iptables conntrack wireguard-go wireguard-tools debootstrap openssl gcc libc6-dev
	busybox-static iproute2 procps util-linux ca-certificates curl docker-registry
)

install_packages() {
	local missing=() p
	for p in "${DEB_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	log "installing Debian packages: ${missing[*]}"
	# --no-install-recommends: wireguard-tools would otherwise pull in a kernel image.
	DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$GA_LOG/apt.log" 2>&1 ||
		{ show_log apt; die "apt-get update failed"; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
		>>"$GA_LOG/apt.log" 2>&1 || { show_log apt; die "apt-get install failed"; }
}

# A stamp of what a build used; a matching stamp means the binaries can be reused.
build_stamp() { cat "$@" | sha256sum | cut -c1-16; }

build_kubernetes() {
	local src=$PLATFORM_DIR/kube-build stamp
	stamp="$K8S_VERSION-$(build_stamp "$src/go.mod" "$src/go.sum" "$src/tools.go")"
	if [[ -f $BIN/.stamp && $(cat "$BIN/.stamp") == "$stamp" ]]; then
		return 0
	fi
	command -v go >/dev/null || die "Go is not installed; the platform builds Kubernetes with it"
	local minor ldf t0=$SECONDS
	minor=$(cut -d. -f2 <<<"$K8S_VERSION")
	ldf="-s -w"
	local pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldf+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldf+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	log "building Kubernetes v$K8S_VERSION from Go modules (cold: about 6 min on 2 cores; log: $GA_LOG/build-kubernetes.log)"
	mkdir -p "$BIN.tmp"
	(cd "$src" && go build -trimpath -ldflags "$ldf" -o "$BIN.tmp/" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
		k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl) \
		>"$GA_LOG/build-kubernetes.log" 2>&1 || { show_log build-kubernetes; die "building Kubernetes failed"; }
	echo "$stamp" >"$BIN.tmp/.stamp"
	rm -rf "$BIN" && mv "$BIN.tmp" "$BIN"
	log "built Kubernetes in $((SECONDS - t0))s"
}

build_coredns() {
	local src=$PLATFORM_DIR/coredns-build out=$GA_CACHE/bin/coredns-$COREDNS_VERSION stamp
	stamp=$(build_stamp "$src/go.mod" "$src/go.sum" "$src/main.go")
	if [[ -x $out/coredns && -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" ]]; then
		return 0
	fi
	local t0=$SECONDS
	log "building CoreDNS v$COREDNS_VERSION with a trimmed plugin set"
	mkdir -p "$out"
	(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/coredns" .) \
		>"$GA_LOG/build-coredns.log" 2>&1 || { show_log build-coredns; die "building CoreDNS failed"; }
	echo "$stamp" >"$out/.stamp"
	log "built CoreDNS in $((SECONDS - t0))s"
}

build_pause() {
	local out=$GA_CACHE/bin/pause
	if [[ -x $out/pause && $out/pause -nt $PLATFORM_DIR/images/pause/pause.c ]]; then
		return 0
	fi
	mkdir -p "$out"
	gcc -Os -Wall -Werror -static -o "$out/pause" "$PLATFORM_DIR/images/pause/pause.c" ||
		die "compiling the pause binary failed"
	strip "$out/pause"
}

# wireguard-go from the upstream module (pinned in wireguard-build/go.mod): its TUN offloads
# (GSO/GRO) carry several times what Debian's 2022 build does. The images copy this binary.
wireguard_go_path() {
	local src=$PLATFORM_DIR/wireguard-build
	echo "$GA_CACHE/bin/wireguard-go-$(build_stamp "$src/go.mod" "$src/go.sum")/wireguard-go"
}

build_wireguard_go() {
	local src=$PLATFORM_DIR/wireguard-build out
	WIREGUARD_GO=$(wireguard_go_path)
	out=$(dirname "$WIREGUARD_GO")
	[[ -x $WIREGUARD_GO ]] && return 0
	command -v go >/dev/null || die "Go is not installed; the platform builds wireguard-go with it"
	log "building wireguard-go from its Go module"
	mkdir -p "$out.tmp"
	(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/wireguard-go" \
		golang.zx2c4.com/wireguard) >"$GA_LOG/build-wireguard-go.log" 2>&1 ||
		{ show_log build-wireguard-go; die "building wireguard-go failed"; }
	rm -rf "$out" && mv "$out.tmp" "$out"
}
