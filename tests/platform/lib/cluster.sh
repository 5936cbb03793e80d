# shellcheck shell=bash
# Host preparation and the daemons of the single-node cluster, in start order.

GUARD_COMMENT=gefyra-async-platform-uplink-guard

prepare_host() {
	mkdir -p "$GA_STATE" "$GA_RUN" "$GA_LOG"
	# Pods asking for HostToContainer/Bidirectional mount propagation need a shared /.
	mount --make-rshared / 2>/dev/null || log "warning: could not make / rshared"
	sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 \
		fs.inotify.max_user_instances=8192 fs.inotify.max_user_watches=524288 >/dev/null ||
		die "setting the kernel parameters the cluster needs failed (are you root?)"
	guard_uplink
}

# Packets for pod, service and tunnel ranges must never leave through the uplink
# (e.g. while kube-proxy has not written its rules yet). The guard sits in mangle
# POSTROUTING, after every routing decision and where neither Docker, kube-proxy nor
# CNI insert rules ahead of it (in filter FORWARD the CNI firewall plugin accepts pod
# traffic first). It stays after `down`; `down --purge` removes it.
guard_uplink() {
	local dev cidr
	dev=$(uplink_dev)
	[[ -n $dev ]] || return 0
	for cidr in "$CLUSTER_CIDR" "$SERVICE_CIDR" "$TUNNEL_CIDR"; do
		iptables -t mangle -C POSTROUTING -o "$dev" -d "$cidr" -m comment --comment "$GUARD_COMMENT" -j DROP 2>/dev/null ||
			iptables -t mangle -I POSTROUTING 1 -o "$dev" -d "$cidr" -m comment --comment "$GUARD_COMMENT" -j DROP ||
			die "installing the uplink guard failed"
	done
}

unguard_uplink() {
	local rule table
	for table in raw mangle filter nat; do
		while rule=$(iptables -t "$table" -S | grep -m1 -- "$GUARD_COMMENT"); do
			eval "iptables -t $table ${rule/-A/-D}"
		done
	done
}

# The platform's Docker host is also the cluster's node, which a developer machine is
# not: its kube-proxy rules would answer Service addresses for containers directly and
# its routes would reach pods without any tunnel. Containers on the project's connection
# networks must reach the cluster only through gefyra-async's tunnel transport (packets
# to the node's own address: the tunnel's NodePort, the API server), so a test passes only
# when the tunnel works. The rules sit where neither kube-proxy, Docker nor CNI put rules,
# so no daemon's start or restart can get ahead of them:
#  - raw PREROUTING: connections from connection networks to the service range are not
#    tracked, so kube-proxy's DNAT (nat table) never sees them — not even the bridged
#    frames an app sends to cargo, which br_netfilter would otherwise re-route to a pod;
#  - mangle FORWARD: nothing of theirs is routed onto the pod bridge except connections
#    DNATed from a node address (NodePorts), and none whose original target was a Service;
#  - mangle INPUT: nothing of theirs reaches the host through a Service address.
isolation_rules() {
	printf '%s\n' \
		"raw PREROUTING -s $CONNECTION_CIDR -d $SERVICE_CIDR -j CT --notrack" \
		"mangle FORWARD -s $CONNECTION_CIDR -o ga-cni0 -m conntrack ! --ctstate DNAT -j DROP" \
		"mangle FORWARD -s $CONNECTION_CIDR -m conntrack --ctorigdst $SERVICE_CIDR -j DROP" \
		"mangle INPUT -s $CONNECTION_CIDR -m conntrack --ctorigdst $SERVICE_CIDR -j DROP"
}

isolate_connection_networks() {
	local table chain spec
	# Rules of earlier platform versions, which kube-proxy could get ahead of.
	iptables -t nat -D PREROUTING -s "$CONNECTION_CIDR" -d "$SERVICE_CIDR" -m comment --comment "$GUARD_COMMENT" -j RETURN 2>/dev/null || true
	iptables -D DOCKER-USER -s "$CONNECTION_CIDR" -o ga-cni0 -m conntrack ! --ctstate DNAT -m comment --comment "$GUARD_COMMENT" -j DROP 2>/dev/null || true
	while read -r table chain spec; do
		# shellcheck disable=SC2086
		iptables -t "$table" -C "$chain" ${spec/ -j / -m comment --comment $GUARD_COMMENT -j } 2>/dev/null ||
			iptables -t "$table" -I "$chain" 1 ${spec/ -j / -m comment --comment $GUARD_COMMENT -j } ||
			die "isolating the connection networks failed ($table $chain $spec)"
	done < <(isolation_rules)
}

# isolation_missing: prints each isolation rule that is not in place; fails if any is missing.
isolation_missing() {
	local table chain spec rc=0
	while read -r table chain spec; do
		# shellcheck disable=SC2086
		if ! iptables -t "$table" -C "$chain" ${spec/ -j / -m comment --comment $GUARD_COMMENT -j } 2>/dev/null; then
			echo "$table $chain $spec"
			rc=1
		fi
	done < <(isolation_rules)
	return $rc
}

docker_ready() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_docker() {
	if docker_ready; then
		pid_alive dockerd || log "using the Docker engine that already runs"
		return 0
	fi
	[[ -S $DOCKER_SOCK ]] && ! pid_alive dockerd && rm -f "$DOCKER_SOCK"
	start_daemon dockerd dockerd --host "unix://$DOCKER_SOCK" --pidfile "$GA_RUN/dockerd.self.pid"
	wait_for dockerd 60 docker_ready
}

start_registry() {
	mkdir -p "$GA_STATE/registry"
	write_if_changed "$GA_STATE/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $GA_STATE/registry}
  delete: {enabled: true}
http:
  addr: $REGISTRY_ADDR
EOF
	start_daemon registry docker-registry serve "$GA_STATE/registry.yml"
	wait_for registry 30 curl -fsS "http://$REGISTRY_ADDR/v2/"
}

start_etcd() {
	start_daemon etcd etcd --name gefyra-async --data-dir "$GA_STATE/etcd" --unsafe-no-fsync \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster gefyra-async=http://127.0.0.1:2380
	wait_for etcd 60 curl -fsS http://127.0.0.1:2379/health
}

apiserver_ready() { $KUBECTL get --raw /readyz; }

start_apiserver() {
	local ip=$1
	start_daemon kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers=http://127.0.0.1:2379 \
		--advertise-address="$ip" --bind-address=0.0.0.0 --secure-port=6443 \
		--tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
		--client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
		--service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction --allow-privileged=true \
		--kubelet-preferred-address-types=InternalIP --v=1
	wait_for kube-apiserver 120 apiserver_ready
}

start_controllers() {
	start_daemon kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig="$KCFG/controller-manager.kubeconfig" \
		--authentication-kubeconfig="$KCFG/controller-manager.kubeconfig" \
		--authorization-kubeconfig="$KCFG/controller-manager.kubeconfig" \
		--leader-elect=false --use-service-account-credentials=true \
		--root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
		--cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
		--service-cluster-ip-range="$SERVICE_CIDR" --cluster-cidr="$CLUSTER_CIDR" \
		--allocate-node-cidrs=false --bind-address=127.0.0.1 --v=1
	start_daemon kube-scheduler "$BIN/kube-scheduler" \
		--kubeconfig="$KCFG/scheduler.kubeconfig" \
		--authentication-kubeconfig="$KCFG/scheduler.kubeconfig" \
		--authorization-kubeconfig="$KCFG/scheduler.kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1 --v=1
}

write_containerd_config() {
	mkdir -p "$GA_STATE/cni/net.d" "$GA_STATE/containerd"
	write_if_changed "$GA_STATE/containerd.toml" <<EOF
version = 2
root = "$GA_STATE/containerd"
state = "$GA_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$GA_STATE/cni/net.d"
EOF
	# firewall: Docker sets FORWARD's policy to DROP; this plugin accepts pod traffic.
	write_if_changed "$GA_STATE/cni/net.d/10-gefyra-async.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "gefyra-async-pods", "plugins": [
  {"type": "bridge", "bridge": "ga-cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$GA_STATE/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall"}
]}
EOF
}

containerd_ready() { $CTR version; }

start_containerd() {
	write_containerd_config
	start_daemon containerd containerd --config "$GA_STATE/containerd.toml"
	wait_for containerd 60 containerd_ready
}

start_kubelet() {
	local ip=$1
	mkdir -p "$GA_STATE/kubelet"
	write_if_changed "$GA_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# PID 1 is not systemd, and containerd 1.6 has no RuntimeConfig RPC: this value is used.
cgroupDriver: cgroupfs
# The machine has a hybrid cgroup v1 hierarchy; 1.35 refuses it unless told otherwise.
failCgroupV1: false
failSwapOn: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
# No host resolver in pods: nothing may query a resolver outside this machine.
resolvConf: ""
# Locally imported images cannot be pulled again (the pause image is not pinned by containerd 1.6).
imageGCHighThresholdPercent: 100
evictionHard: {nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}
serializeImagePulls: false
EOF
	start_daemon kubelet "$BIN/kubelet" --config="$GA_STATE/kubelet.yaml" \
		--kubeconfig="$KCFG/kubelet.kubeconfig" --root-dir="$GA_STATE/kubelet" \
		--cert-dir="$GA_STATE/kubelet/pki" \
		--hostname-override="$NODE_NAME" --node-ip="$ip" --v=1
	wait_for kubelet 120 $KUBECTL get node "$NODE_NAME"
}

start_kube_proxy() {
	write_if_changed "$GA_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KCFG/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
iptables: {minSyncPeriod: 1s}
conntrack: {maxPerCore: 0}
EOF
	start_daemon kube-proxy "$BIN/kube-proxy" --config="$GA_STATE/kube-proxy.yaml" --v=1
}

start_coredns() {
	sed -e "s|@IMAGE@|$COREDNS_IMAGE|" -e "s|@CLUSTER_DNS@|$CLUSTER_DNS|" \
		"$PLATFORM_DIR/manifests/coredns.yaml" | $KUBECTL apply -f - >/dev/null ||
		die "applying the CoreDNS manifests failed"
}

# Ready, and posted by the kubelet that runs now: after a crash, etcd still holds the
# old node's Ready status for a while.
node_ready() {
	local since=$1 cond
	cond=$($KUBECTL get node "$NODE_NAME" \
		-o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
	[[ ${cond%% *} == True ]] && (($(date -d "${cond#* }" +%s) >= since))
}

# Cluster DNS answers from the host: proves kube-proxy's rules, the pod network, the
# CoreDNS pod and its API watch all work, not just that objects say so.
cluster_dns_ready() {
	[[ $(python3 "$PLATFORM_DIR/tools/dns_probe.py" "$CLUSTER_DNS" kubernetes.default.svc.cluster.local 1) == 10.96.0.1 ]]
}

wait_cluster_ready() {
	local since
	# The kubelet posts its status when it starts; older heartbeats are not its own.
	since=$(($(stat -c %Y "/proc/$(daemon_pid kubelet)") - 1))
	wait_for kubelet 180 node_ready "$since"
	wait_for kube-controller-manager 120 $KUBECTL -n default get serviceaccount default
	if ! $KUBECTL -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null 2>&1; then
		$KUBECTL -n kube-system get pods -o wide >&2 || true
		$KUBECTL -n kube-system describe pods -l k8s-app=kube-dns 2>&1 | tail -n 30 >&2 || true
		show_log kubelet
		die "CoreDNS did not become ready"
	fi
	wait_for kube-proxy 60 cluster_dns_ready
}

# ---- teardown ----

# Processes whose command line names our containerd socket: the shims we caused to start.
our_shim_pids() {
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "$CONTAINERD_SOCK" && basename "$p"
	done
	return 0
}

stop_cluster() {
	if pid_alive kube-apiserver && pid_alive kubelet && [[ -x $BIN/kubectl ]]; then
		# No scheduler or controllers: deleted pods stay deleted.
		stop_daemon kube-controller-manager
		stop_daemon kube-scheduler
		log "deleting all pods so kubelet tears down their sandboxes and networks"
		$KUBECTL delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
		local deadline=$((SECONDS + 60))
		while ((SECONDS < deadline)) && [[ -n $($CTR tasks ls -q 2>/dev/null) ]]; do sleep 1; done
	fi
	stop_daemon kube-controller-manager
	stop_daemon kube-scheduler
	stop_daemon kubelet
	if pid_alive kube-proxy; then
		stop_daemon kube-proxy
	fi
	[[ -x $BIN/kube-proxy ]] && "$BIN/kube-proxy" --cleanup >>"$GA_LOG/kube-proxy.log" 2>&1
	if pid_alive containerd; then
		local t
		for t in $($CTR tasks ls -q 2>/dev/null); do
			$CTR tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
		done
		sleep 1
		for t in $($CTR tasks ls -q 2>/dev/null); do $CTR tasks rm -f "$t" >/dev/null 2>&1 || true; done
	fi
	stop_daemon containerd
	local p
	for p in $(our_shim_pids); do kill -9 "$p" 2>/dev/null || true; done
	stop_daemon kube-apiserver
	stop_daemon etcd
	cleanup_network
}

cleanup_network() {
	ip link del ga-cni0 2>/dev/null || true
	# Chains of kubelet, kube-proxy and CNI (also of sandboxes killed rather than torn down).
	local ipt table
	for ipt in iptables ip6tables; do
		for table in filter nat mangle; do
			remove_chains "$ipt" "$table" '^(CNI|KUBE)-'
		done
	done
	# Network namespaces of killed sandboxes.
	local ns
	for ns in /var/run/netns/cni-*; do
		[[ -e $ns ]] || continue
		umount "$ns" 2>/dev/null || true
		rm -f "$ns"
	done
}

# remove_chains IPTABLES TABLE REGEX: delete the jumps into matching chains, then the chains.
remove_chains() {
	local ipt=$1 table=$2 re=$3 chains rule chain
	chains=$($ipt -t "$table" -S 2>/dev/null | awk -v re="$re" '$1 == "-N" && $2 ~ re {print $2}')
	[[ -n $chains ]] || return 0
	$ipt -t "$table" -S 2>/dev/null | awk -v re="$re" '$1 == "-A" && $2 !~ re' | while read -r rule; do
		for chain in $chains; do
			if [[ " $rule " == *" -j $chain "* ]]; then
				# shellcheck disable=SC2086
				eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null || true
				break
			fi
		done
	done
	for chain in $chains; do $ipt -t "$table" -F "$chain" 2>/dev/null || true; done
	for chain in $chains; do $ipt -t "$table" -X "$chain" 2>/dev/null || true; done
}

# Unmount everything below a directory (deepest first), then remove it.
remove_tree() {
	local dir=$1 m
	[[ -d $dir ]] || return 0
	for m in $(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf "$dir"
}
