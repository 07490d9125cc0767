#!/usr/bin/env bash
# `make package`: the OS packages and the OCI image from the static binaries of `make cross`.
#
#   target/package/ferrite_<V>_{amd64,arm64}.deb            dpkg-deb
#   target/package/ferrite-<V>-1.{x86_64,aarch64}.rpm        rpmbuild
#   target/package/oci/                                      OCI layout: multi-arch index <V>
#   target/package/ferrite-image-<V>.oci.tar                 the same layout as one archive
#   target/package/ferrite-airgap-image-{amd64,arm64}.tar.zst  docker-archive for k3s's
#                                                            /var/lib/rancher/k3s/agent/images/
#
# Debian's own tools (dpkg-deb, rpmbuild, umoci, skopeo, zstd), no docker, no registry, no network:
# they package prebuilt cross binaries as they are, which cargo-deb/cargo-generate-rpm would have
# to be built from crates.io for (minutes on this machine) to do the same.
# Image name and tag come from the binary (`ferrite manifests image`): the DaemonSet's image.
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/target/package}"
X86_BIN="${FERRITE_X86_BIN:-$ROOT/target/x86_64-unknown-linux-musl/release/ferrite}"
ARM_BIN="${FERRITE_ARM_BIN:-$ROOT/target/aarch64-unknown-linux-musl/release/ferrite}"
PKG="$ROOT/packaging"

log() { printf 'package: %s\n' "$*" >&2; }
die() { printf 'package: %s\n' "$*" >&2; exit 1; }

for b in "$X86_BIN" "$ARM_BIN"; do
  [ -x "$b" ] || die "$b missing: run \`make cross\` first (the static x86_64 and aarch64 binaries)"
done
for t in dpkg-deb rpmbuild umoci skopeo zstd sha256sum; do
  command -v "$t" >/dev/null || die "$t not found: run \`make setup\` (apt-get install dpkg-dev rpm umoci skopeo zstd)"
done

IMAGE="$("$X86_BIN" manifests image)"
VERSION="$("$X86_BIN" version -o json | sed -n 's/.*"version":"\([^"]*\)".*/\1/p')"
[ -n "$VERSION" ] || die "cannot read the version from $X86_BIN"
[ "${IMAGE##*:}" = "$VERSION" ] || die "image tag of $IMAGE is not the version $VERSION"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
# Reproducible timestamps: the commit's date (or SOURCE_DATE_EPOCH).
EPOCH="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}"
CREATED="$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
DESCRIPTION="Networking for small k3s clusters: CNI, eBPF service LB, LB IP pools, L2 announcements"

rm -rf "$OUT"
mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The file tree both package formats install (modes set here, owners root:root).
stage() { # stage DIR BINARY
  local d="$1"
  install -D -m 0755 "$2" "$d/usr/bin/ferrite"
  install -D -m 0644 "$PKG/ferrite.service" "$d/usr/lib/systemd/system/ferrite.service"
  install -D -m 0644 "$PKG/default-ferrite" "$d/etc/default/ferrite"
  install -D -m 0644 "$PKG/90-ferrite.yaml" "$d/etc/rancher/k3s/config.yaml.d/90-ferrite.yaml"
  install -d -m 0755 "$d/etc/ferrite"
}

build_deb() { # build_deb DEBARCH BINARY
  local arch="$1" d="$WORK/deb-$1"
  stage "$d" "$2"
  install -d -m 0755 "$d/DEBIAN"
  sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$arch/" \
    -e "s/@SIZE@/$(du -sk --exclude=DEBIAN "$d" | cut -f1)/" "$PKG/deb/control" >"$d/DEBIAN/control"
  install -m 0644 "$PKG/deb/conffiles" "$d/DEBIAN/conffiles"
  for s in postinst prerm postrm; do install -m 0755 "$PKG/scripts/$s" "$d/DEBIAN/$s"; done
  SOURCE_DATE_EPOCH="$EPOCH" dpkg-deb --root-owner-group -Zxz --build "$d" \
    "$OUT/ferrite_${VERSION}_${arch}.deb" >/dev/null
  log "ferrite_${VERSION}_${arch}.deb"
}

build_rpm() { # build_rpm RPMARCH BINARY
  local arch="$1" d="$WORK/rpm-$1"
  stage "$d/root" "$2"
  mkdir -p "$d/top"
  SOURCE_DATE_EPOCH="$EPOCH" rpmbuild -bb --quiet --target "$arch-linux" \
    --define "_topdir $d/top" --define "_rpmdir $OUT" --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "ferrite_version $VERSION" --define "ferrite_stage $d/root" --define "ferrite_scripts $PKG/scripts" \
    "$PKG/rpm/ferrite.spec" >/dev/null
  log "ferrite-${VERSION}-1.${arch}.rpm"
}

# One image per architecture (umoci: empty image + the binary as its only layer).
build_image() { # build_image GOARCH BINARY LAYOUT
  local arch="$1" bin="$2" layout="$3"
  umoci init --layout "$layout"
  umoci new --image "$layout:img"
  umoci insert --image "$layout:img" --history.created "$CREATED" \
    --history.created_by "scripts/package.sh: /usr/bin/ferrite" "$bin" /usr/bin/ferrite
  umoci config --no-history --image "$layout:img" --os linux --architecture "$arch" \
    --created "$CREATED" --config.entrypoint /usr/bin/ferrite --config.cmd version \
    --config.env PATH=/usr/bin --config.workingdir / \
    --config.label "org.opencontainers.image.title=ferrite" \
    --config.label "org.opencontainers.image.description=$DESCRIPTION" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.created=$CREATED" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "org.opencontainers.image.source=https://github.com/ferrite-net/ferrite" \
    --config.label "org.opencontainers.image.ref.name=$IMAGE"
  umoci gc --layout "$layout"
}

# The multi-arch index over both images (umoci tags single manifests only), tagged <VERSION>.
build_index() {
  local idx="$OUT/oci" entries="" arch layout digest size
  mkdir -p "$idx/blobs/sha256"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$idx/oci-layout"
  for arch in amd64 arm64; do
    layout="$WORK/oci-$arch"
    cp -n "$layout"/blobs/sha256/* "$idx/blobs/sha256/"
    digest="$(grep -o '"digest":"sha256:[0-9a-f]*"' "$layout/index.json" | head -1 | cut -d'"' -f4)"
    size="$(stat -c %s "$layout/blobs/sha256/${digest#sha256:}")"
    entries="$entries${entries:+,}{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$digest\",\"size\":$size,\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"}}"
  done
  local index="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[$entries],\"annotations\":{\"org.opencontainers.image.title\":\"ferrite\",\"org.opencontainers.image.version\":\"$VERSION\",\"org.opencontainers.image.revision\":\"$REVISION\",\"org.opencontainers.image.created\":\"$CREATED\",\"org.opencontainers.image.source\":\"https://github.com/ferrite-net/ferrite\",\"org.opencontainers.image.licenses\":\"Apache-2.0\"}}"
  printf '%s' "$index" >"$WORK/index.json"
  digest="$(sha256sum "$WORK/index.json" | cut -d' ' -f1)"
  size="$(stat -c %s "$WORK/index.json")"
  cp "$WORK/index.json" "$idx/blobs/sha256/$digest"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s","io.containerd.image.name":"%s"}}]}' \
    "$digest" "$size" "$VERSION" "$IMAGE" >"$idx/index.json"
  tar -C "$idx" --sort=name --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
    -cf "$OUT/ferrite-image-${VERSION}.oci.tar" .
  log "oci/ (index $IMAGE: linux/amd64, linux/arm64), ferrite-image-${VERSION}.oci.tar"
}

# Per-arch airgap tarballs named and tagged like the DaemonSet's image (what k3s imports).
build_airgap() { # build_airgap GOARCH
  local tar="$WORK/airgap-$1.tar"
  skopeo copy --quiet --override-os linux --override-arch "$1" \
    "oci:$OUT/oci:$VERSION" "docker-archive:$tar:$IMAGE"
  zstd -q -19 -T0 "$tar" -o "$OUT/ferrite-airgap-image-$1.tar.zst"
  log "ferrite-airgap-image-$1.tar.zst ($IMAGE)"
}

build_deb amd64 "$X86_BIN"
build_deb arm64 "$ARM_BIN"
build_rpm x86_64 "$X86_BIN"
build_rpm aarch64 "$ARM_BIN"
build_image amd64 "$X86_BIN" "$WORK/oci-amd64"
build_image arm64 "$ARM_BIN" "$WORK/oci-arm64"
build_index
build_airgap amd64
build_airgap arm64
printf '%s\n' "$IMAGE" >"$OUT/IMAGE"
(cd "$OUT" && sha256sum ./*.deb ./*.rpm ./*.tar ./*.tar.zst >SHA256SUMS)
log "done: $OUT"
