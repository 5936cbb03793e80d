# shellcheck shell=bash
# Certificates, tokens and kubeconfigs of the local cluster (openssl, static token file).

ensure_pki() {
	local ip=$1
	mkdir -p "$PKI" "$KCFG"
	chmod 700 "$PKI"
	if [[ ! -f $PKI/ca.crt ]]; then
		log "creating the cluster CA and keys"
		openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
			-days 365 -subj "/CN=gefyra-async-platform-ca" >/dev/null 2>&1 || die "openssl: creating the CA failed"
		openssl genrsa -out "$PKI/sa.key" 2048 >/dev/null 2>&1 &&
			openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" >/dev/null 2>&1 ||
			die "openssl: creating the service-account key pair failed"
	fi
	# The serving cert names the node IP, so it is remade when that changes.
	if [[ ! -f $PKI/apiserver.crt || $(cat "$PKI/apiserver.ip" 2>/dev/null) != "$ip" ]]; then
		openssl req -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" \
			-subj "/CN=kube-apiserver" >/dev/null 2>&1 || die "openssl: creating the API server key failed"
		printf 'subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.96.0.1,IP:%s\nextendedKeyUsage=serverAuth\n' \
			"$ip" >"$PKI/apiserver.ext"
		openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
			-CAcreateserial -out "$PKI/apiserver.crt" -days 365 -extfile "$PKI/apiserver.ext" \
			>/dev/null 2>&1 || die "openssl: signing the API server cert failed"
		echo "$ip" >"$PKI/apiserver.ip"
	fi
	if [[ ! -f $PKI/tokens.csv ]]; then
		local t
		t() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
		{
			echo "$(t),gefyra-async-admin,admin,\"system:masters\""
			echo "$(t),system:node:$NODE_NAME,kubelet,\"system:nodes\""
			echo "$(t),system:kube-controller-manager,kcm"
			echo "$(t),system:kube-scheduler,scheduler"
			echo "$(t),system:kube-proxy,kube-proxy"
		} >"$PKI/tokens.csv"
		chmod 600 "$PKI/tokens.csv"
	fi
	local user token name
	while IFS=, read -r token user _; do
		case $user in
		gefyra-async-admin) name=admin ;;
		system:node:*) name=kubelet ;;
		system:kube-controller-manager) name=controller-manager ;;
		system:kube-scheduler) name=scheduler ;;
		system:kube-proxy) name=kube-proxy ;;
		*) continue ;;
		esac
		write_kubeconfig "$KCFG/$name.kubeconfig" "https://$ip:6443" "$user" "$token"
	done <"$PKI/tokens.csv"
	write_if_changed "$ADMIN_KUBECONFIG" <"$KCFG/admin.kubeconfig"
}

# write_kubeconfig FILE SERVER USER TOKEN (CA embedded, so the file stands alone)
write_kubeconfig() {
	local ca
	ca=$(base64 -w0 <"$PKI/ca.crt")
	umask 077
	write_if_changed "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gefyra-async-platform
  cluster:
    server: $2
    certificate-authority-data: $ca
users:
- name: $3
  user:
    token: $4
contexts:
- name: gefyra-async-platform
  context:
    cluster: gefyra-async-platform
    user: $3
    namespace: default
current-context: gefyra-async-platform
EOF
	umask 022
}
