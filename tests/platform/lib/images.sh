# shellcheck shell=bash
# The image pipeline: a cached Debian base image, project images built with
# Docker and loaded into the cluster's containerd under fully qualified names.

docker_has_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The base image: debootstrap once into a cached tarball, then `docker import`.
ensure_base_image() {
	docker_has_image "$BASE_IMAGE" && return 0
	local tarball=$GA_CACHE/rootfs/$DEBIAN_SUITE-$(build_stamp <(echo "$BASE_PACKAGES")).tar
	if [[ ! -s $tarball ]]; then
		local dir=$GA_CACHE/rootfs/$DEBIAN_SUITE.tmp t0=$SECONDS
		log "debootstrap $DEBIAN_SUITE (minbase + $BASE_PACKAGES); log: $GA_LOG/debootstrap.log"
		rm -rf "$dir" && mkdir -p "$dir"
		debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR" \
			>"$GA_LOG/debootstrap.log" 2>&1 || { show_log debootstrap; die "debootstrap failed"; }
		# Keep the image small: no apt lists, caches or docs.
		rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
		tar -C "$dir" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
		rm -rf "$dir"
		log "debootstrap took $((SECONDS - t0))s"
	fi
	log "importing $BASE_IMAGE into Docker"
	docker import --change 'CMD ["/bin/bash"]' "$tarball" "$BASE_IMAGE" >/dev/null ||
		die "docker import of the base image failed"
}

# load_image NAME: copy an image from Docker into the cluster's containerd.
load_image() {
	local name=$1
	[[ $name == */*.*/* || $name == *.*/* ]] || die "image name '$name' is not fully qualified (e.g. $IMAGE_PREFIX/x:1)"
	[[ $name == *:latest || $name != *:* ]] && die "image '$name' needs an explicit tag other than :latest"
	docker_has_image "$name" || die "Docker has no image '$name'; build it first"
	local id marker
	id=$(docker image inspect -f '{{.Id}}' "$name")
	# containerd's store is wiped by `down`, and so is this marker: skip only exact repeats.
	marker=$GA_STATE/loaded/$(tr '/:' '__' <<<"$name")
	[[ -f $marker && $(cat "$marker") == "$id" ]] && return 0
	docker save "$name" | $CTR images import - >/dev/null ||
		die "importing '$name' into the cluster's containerd failed"
	mkdir -p "$GA_STATE/loaded"
	echo "$id" >"$marker"
	log "loaded $name into the cluster"
}

# build_image DIR NAME: docker build DIR (ARG BASE = the base image), then load it.
build_image() {
	local dir=$1 name=$2
	[[ -f $dir/Dockerfile ]] || die "no Dockerfile in '$dir'"
	ensure_base_image
	local old
	old=$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)
	docker build -q --build-arg "BASE=$BASE_IMAGE" -t "$name" "$dir" >"$GA_LOG/docker-build.log" 2>&1 ||
		{ show_log docker-build; die "docker build of '$dir' failed"; }
	# The build it replaces would linger as <none>; drop it unless something uses it.
	if [[ -n $old && $old != $(docker image inspect -f '{{.Id}}' "$name") ]]; then
		docker rmi "$old" >/dev/null 2>&1 || true
	fi
	load_image "$name"
}

ensure_pause_image() {
	build_pause
	if ! docker_has_image "$PAUSE_IMAGE"; then
		tar -C "$GA_CACHE/bin/pause" -c pause | docker import \
			--change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' - "$PAUSE_IMAGE" >/dev/null ||
			die "docker import of the pause image failed"
	fi
	load_image "$PAUSE_IMAGE"
}

ensure_coredns_image() {
	build_coredns
	if ! docker_has_image "$COREDNS_IMAGE"; then
		local ctx
		ctx=$(mktemp -d)
		cp "$PLATFORM_DIR/images/coredns/Dockerfile" "$GA_CACHE/bin/coredns-$COREDNS_VERSION/coredns" "$ctx/"
		docker build -q -t "$COREDNS_IMAGE" "$ctx" >"$GA_LOG/docker-build.log" 2>&1 ||
			{ rm -rf "$ctx"; show_log docker-build; die "docker build of the CoreDNS image failed"; }
		rm -rf "$ctx"
	fi
	load_image "$COREDNS_IMAGE"
}

ensure_images() {
	ensure_pause_image
	ensure_base_image
	load_image "$BASE_IMAGE"
	ensure_coredns_image
	build_image "$PLATFORM_DIR/images/demo" "$DEMO_IMAGE"
	ensure_product_images
}

# remove_image NAME: drop a project image from the cluster's containerd and from Docker.
remove_image() {
	local name=$1
	[[ $name == "$IMAGE_PREFIX"/* ]] || die "only project images ($IMAGE_PREFIX/...) can be removed"
	if containerd_ready >/dev/null 2>&1; then
		$CTR images rm "$name" >/dev/null 2>&1 || true
	fi
	rm -f "$GA_STATE/loaded/$(tr '/:' '__' <<<"$name")"
	if docker_has_image "$name"; then
		docker rmi "$name" >/dev/null || die "docker rmi '$name' failed"
	fi
}

# The runtime dependencies of gefyra_async, installed once per pyproject.toml into a
# cached folder that every product image copies (the images have python3 but no pip).
python_deps_dir() {
	local stamp dir
	stamp=$(build_stamp "$REPO_DIR/pyproject.toml")
	dir=$GA_CACHE/image-deps/$stamp
	if [[ ! -d $dir ]]; then
		python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip; it is needed to build the product images"
		local deps
		deps=$(python3 -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
			"$REPO_DIR/pyproject.toml") || die "cannot read the dependencies from pyproject.toml"
		log "installing the product images' Python dependencies into $dir"
		mapfile -t deps <<<"$deps"
		python3 -m pip install -q --no-compile --disable-pip-version-check --target "$dir.tmp" "${deps[@]}" \
			>"$GA_LOG/image-deps.log" 2>&1 || { show_log image-deps; rm -rf "$dir.tmp"; die "pip install of the image dependencies failed"; }
		mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}

# build_product_image DIR NAME [load]: an image of gefyra_async (stowaway/, cargo/, ...):
# the Dockerfile in DIR, the package and its dependencies, wireguard-go (upstream build). Rebuilt only
# when any of them changed; with "load", also loaded into the cluster.
build_product_image() {
	local dir=$1 name=$2 load=${3:-} deps stamp ctx
	build_wireguard_go
	deps=$(python_deps_dir)
	stamp=$(cd "$REPO_DIR" && find gefyra_async -name '*.py' -print0 | sort -z | xargs -0 cat |
		cat - "$dir/Dockerfile" "$REPO_DIR/pyproject.toml" "$WIREGUARD_GO" | sha256sum | cut -c1-16)
	if [[ $(docker image inspect -f '{{index .Config.Labels "gefyra-async.dev/stamp"}}' "$name" 2>/dev/null) != "$stamp" ]]; then
		ensure_base_image
		ctx=$(mktemp -d)
		cp "$dir/Dockerfile" "$ctx/"
		cp "$WIREGUARD_GO" "$ctx/wireguard-go"
		cp -a "$deps" "$ctx/site"
		(cd "$REPO_DIR" && find gefyra_async \( -name '*.py' -o -name py.typed \) -print0 | tar --null -T - -c) |
			tar -C "$ctx/site" -x
		local old
		old=$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)
		docker build -q --build-arg "BASE=$BASE_IMAGE" --label "gefyra-async.dev/stamp=$stamp" -t "$name" "$ctx" \
			>"$GA_LOG/docker-build.log" 2>&1 || { rm -rf "$ctx"; show_log docker-build; die "docker build of $name failed"; }
		rm -rf "$ctx"
		[[ -n $old ]] && docker rmi "$old" >/dev/null 2>&1 || true
		log "built $name"
	fi
	[[ $load == load ]] && load_image "$name"
	return 0
}

product_version() {
	python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO_DIR/pyproject.toml"
}

ensure_product_images() {
	local version
	version=$(product_version)
	build_product_image "$REPO_DIR/stowaway" "$IMAGE_PREFIX/stowaway:$version" load
	build_product_image "$REPO_DIR/cargo" "$IMAGE_PREFIX/cargo:$version"
	build_product_image "$REPO_DIR/carrier" "$IMAGE_PREFIX/carrier:$version" load
}
