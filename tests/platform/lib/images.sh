# shellcheck shell=bash
# The image pipeline: a cached Debian base image, project images built with
# Docker and loaded into the cluster's containerd under fully qualified names.

docker_has_image() { docker image inspect "$1" >/dev/null 2>&1; }

# The base image: debootstrap once into a cached tarball, then `docker import`.
ensure_base_image() {
	docker_has_image "$BASE_IMAGE" && return 0
	local tarball=$GA_CACHE/rootfs/$DEBIAN_SUITE-$(build_stamp <(echo "$BASE_PACKAGES")).tar
	if [[ ! -s $tarball ]]; then
		local dir=$GA_CACHE/rootfs/$DEBIAN_SUITE.tmp t0=$SECONDS mirror
		mirror=$(debian_mirror)
		log "debootstrap $DEBIAN_SUITE from $mirror (minbase + $BASE_PACKAGES); log: $GA_LOG/debootstrap.log"
		rm -rf "$dir" && mkdir -p "$dir"
		debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$dir" "$mirror" \
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
	[[ $name == "$IMAGE_PREFIX"/* || $name == "$PRODUCT_REGISTRY"/* ]] ||
		die "only project images ($IMAGE_PREFIX/... or $PRODUCT_REGISTRY/...) can be removed"
	if containerd_ready >/dev/null 2>&1; then
		$CTR images rm "$name" >/dev/null 2>&1 || true
	fi
	rm -f "$GA_STATE/loaded/$(tr '/:' '__' <<<"$name")"
	if docker_has_image "$name"; then
		docker rmi "$name" >/dev/null || die "docker rmi '$name' failed"
	fi
}

# The product images, built and pushed the way a team would: `gefyra-async images build
# --push` into the platform's registry, on the platform's Debian base with the upstream
# wireguard-go build. Docker and the cluster then pull them from the registry like from any
# other: the images go by their registry names only there, never side-loaded.
ensure_product_images() {
	local version c ref
	build_wireguard_go
	python_env
	version=$(product_version)
	log "building the product images, pushing them to $PRODUCT_REGISTRY (log: $GA_LOG/images.log)"
	"$GA_VENV/bin/gefyra-async" images build --push --registry "$PRODUCT_REGISTRY" \
		--base "$BASE_IMAGE" --wireguard-go "$WIREGUARD_GO" >"$GA_LOG/images.log" 2>&1 ||
		{ show_log images; die "gefyra-async images build --push failed"; }
	for c in cargo stowaway carrier; do
		ref=$PRODUCT_REGISTRY/$c:${version//+/-}
		# A local name keeps the build (and Docker's build cache) while the registry name
		# goes, so `up` pulls cargo; the cluster drops its copy, so pods pull this build.
		docker tag "$ref" "$BUILD_PREFIX/$c:build" && docker rmi "$ref" >/dev/null ||
			die "untagging $ref failed"
		if containerd_ready >/dev/null 2>&1; then
			$CTR images rm "$ref" >/dev/null 2>&1 || true
		fi
	done
}

product_version() {
	python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO_DIR/pyproject.toml"
}
