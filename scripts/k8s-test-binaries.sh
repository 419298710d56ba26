#!/usr/bin/env bash
# Build the Kubernetes test binaries kube-nbd's tests need, from source,
# through the Go module proxy only (no prebuilt downloads):
#
#   kube-apiserver  k8s.io/kubernetes/cmd/kube-apiserver      (operator tests)
#   kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager
#                   (garbage collector and StatefulSet controller for the operator tests)
#   etcd            go.etcd.io/etcd/server/v3                 (backing store for kube-apiserver)
#   csi-sanity      github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity (CSI plugin)
#   csi-attacher    github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher
#                   (the sidecar that turns VolumeAttachments into ControllerPublishVolume calls)
#   helm            helm.sh/helm/v3/cmd/helm                  (chart tests)
#
# Binaries go to ~/.cache/kube-nbd/bin/<component>-<version>/<component>,
# outside the repository. A binary that is already there is reused, so a
# second run builds nothing and only prints where the binaries are.
#
# Run with --help for usage.
set -euo pipefail

KUBE_VERSION="${KUBE_NBD_KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${KUBE_NBD_ETCD_VERSION:-v3.6.16}"
CSI_TEST_VERSION="${KUBE_NBD_CSI_TEST_VERSION:-v5.6.0}"
CSI_ATTACHER_VERSION="${KUBE_NBD_CSI_ATTACHER_VERSION:-v4.13.0}"
HELM_VERSION="${KUBE_NBD_HELM_VERSION:-v3.22.0}"

CACHE_ROOT="${KUBE_NBD_CACHE_DIR:-$HOME/.cache/kube-nbd}"
BIN_ROOT="$CACHE_ROOT/bin"

ALL_COMPONENTS=(kube-apiserver kube-controller-manager etcd csi-sanity csi-attacher helm)

usage() {
  cat <<EOF
Usage: $0 [--print-env] [--check] [COMPONENT...]

Builds (once) and locates the Kubernetes test binaries for kube-nbd:
  ${ALL_COMPONENTS[*]}
COMPONENT limits the work to those components (default: all of them).

Binaries are cached in $BIN_ROOT/<component>-<version>/
and reused on later runs; the Go build cache is $CACHE_ROOT/go-build,
modules come from the Go module proxy into the default GOMODCACHE.
Needs Go >= 1.26 (GOTOOLCHAIN=local is forced: no toolchain download).

Options:
  --print-env  build what is missing (progress on stderr), then print on
               stdout only shell assignments, for
                 eval "\$($0 --print-env)"
               KUBE_NBD_K8S_BIN_KUBE_APISERVER, KUBE_NBD_K8S_BIN_KUBE_CONTROLLER_MANAGER,
               KUBE_NBD_K8S_BIN_ETCD,
               KUBE_NBD_K8S_BIN_CSI_SANITY, KUBE_NBD_K8S_BIN_CSI_ATTACHER,
               KUBE_NBD_K8S_BIN_HELM (binary paths),
               KUBE_NBD_K8S_BIN_PATH (their directories, ':'-joined) and an
               'export' line for all of them.
  --check      build nothing; exit 1 if a requested binary is missing.
  -h, --help   this text.

Versions (override with the environment variable in brackets):
  kube-apiserver and kube-controller-manager $KUBE_VERSION  [KUBE_NBD_KUBE_VERSION]
  etcd           $ETCD_VERSION  [KUBE_NBD_ETCD_VERSION]
  csi-sanity     $CSI_TEST_VERSION   [KUBE_NBD_CSI_TEST_VERSION]
  csi-attacher   $CSI_ATTACHER_VERSION  [KUBE_NBD_CSI_ATTACHER_VERSION]
  helm           $HELM_VERSION  [KUBE_NBD_HELM_VERSION]
Cache root: $CACHE_ROOT [KUBE_NBD_CACHE_DIR]
EOF
}

PRINT_ENV=0
CHECK_ONLY=0
COMPONENTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --print-env) PRINT_ENV=1 ;;
    --check) CHECK_ONLY=1 ;;
    -h|--help) usage; exit 0 ;;
    kube-apiserver|kube-controller-manager|etcd|csi-sanity|csi-attacher|helm) COMPONENTS+=("$1") ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=("${ALL_COMPONENTS[@]}")

log() { echo "k8s-test-binaries: $*" >&2; }
die() { log "error: $*"; exit 1; }

version_of() {
  case "$1" in
    kube-apiserver|kube-controller-manager) echo "$KUBE_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    csi-sanity) echo "$CSI_TEST_VERSION" ;;
    csi-attacher) echo "$CSI_ATTACHER_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
  esac
}
bin_path() { echo "$BIN_ROOT/$1-$(version_of "$1")/$1"; }
env_name() { local n="${1//-/_}"; echo "KUBE_NBD_K8S_BIN_${n^^}"; }

# ---------------------------------------------------------------- Go setup
setup_go() {
  GO="$(command -v go || true)"
  if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
  [ -n "$GO" ] || die "no 'go' on PATH (nor /usr/local/go/bin/go); Go >= 1.26 is needed"
  export GOTOOLCHAIN=local          # never try to download a toolchain
  export CGO_ENABLED=0
  export GOCACHE="$CACHE_ROOT/go-build"
  export GOFLAGS="-p=2 -buildvcs=false"   # 2-core machines; no VCS stamping
  unset GOBIN GOOS GOARCH || true
  local v
  v="$("$GO" env GOVERSION)"   # e.g. go1.26.8
  local minor="${v#go1.}"; minor="${minor%%.*}"; minor="${minor%%[!0-9]*}"
  if [ -z "$minor" ] || [ "$minor" -lt 26 ]; then
    die "$GO is $v; etcd $ETCD_VERSION and helm $HELM_VERSION need go >= 1.26"
  fi
  mkdir -p "$GOCACHE" "$BIN_ROOT"
  log "using $v ($GO), GOCACHE=$GOCACHE, GOMODCACHE=$("$GO" env GOMODCACHE)"
}

# Value of a string field from `go mod download -json` output.
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" | head -n1; }

# Install "$1" (a freshly built file) as the cached binary for component $2.
install_bin() {
  local built="$1" comp="$2" dest
  dest="$(bin_path "$comp")"
  mkdir -p "$(dirname "$dest")"
  chmod 0755 "$built"
  mv -f "$built" "$dest"
}

LDFLAGS_STRIP="-s -w"

# ------------------------------------- kube-apiserver, kube-controller-manager
# k8s.io/kubernetes replaces every k8s.io staging module with ./staging/...,
# so `go install k8s.io/kubernetes/cmd/kube-apiserver@vX` cannot work. Build
# it inside a throw-away module that requires k8s.io/kubernetes vX.Y.Z and
# replaces each staging module with its published v0.Y.Z. Staging modules the
# proxy does not serve (e.g. k8s.io/sample-controller) are never imported by
# kube-apiserver; they are replaced by an empty local stub module.
build_kubernetes_command() {
  local work="$1" cmd="$2" v="$KUBE_VERSION" sv="v0.${KUBE_VERSION#v1.}"
  local kmod gomod
  kmod="$("$GO" mod download -json "k8s.io/kubernetes@$v")" \
    || die "k8s.io/kubernetes@$v is not on the module proxy: $kmod"
  gomod="$(json_field GoMod <<<"$kmod")"
  [ -f "$gomod" ] || die "cannot find go.mod of k8s.io/kubernetes@$v"
  local staging
  staging="$(sed -n '/^replace (/,/^)/p' "$gomod" | awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}')"
  [ -n "$staging" ] || die "no staging replace block in $gomod"

  local goline godebug reps="" m n
  goline="$(awk '$1 == "go" {print $2; exit}' "$gomod")"
  godebug="$(awk '$1 == "godebug" {print; exit}' "$gomod")"
  mkdir -p "$work/stub"
  for m in $staging; do
    if (cd / && "$GO" list -m -json "$m@$sv" >/dev/null 2>&1); then
      reps+=$'\t'"$m => $m $sv"$'\n'
    else
      n="${m#k8s.io/}"
      log "  $m@$sv is not on the proxy; $cmd does not import it, using an empty stub"
      mkdir -p "$work/stub/$n"
      printf 'module %s\n\ngo %s\n' "$m" "$goline" >"$work/stub/$n/go.mod"
      reps+=$'\t'"$m => ./stub/$n"$'\n'
    fi
  done
  {
    printf 'module kube-nbd.local/kube-apiserver-build\n\ngo %s\n\n' "$goline"
    [ -z "$godebug" ] || printf '%s\n\n' "$godebug"
    printf 'require k8s.io/kubernetes %s\n\nreplace (\n%s)\n' "$v" "$reps"
  } >"$work/go.mod"

  # Same version stamping as kubernetes' hack/lib/version.sh.
  local major minor ldflags="$LDFLAGS_STRIP" pkg
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$work" && "$GO" build -mod=mod -trimpath -ldflags "$ldflags" \
      -o "$work/$cmd" "k8s.io/kubernetes/cmd/$cmd") >&2
  install_bin "$work/$cmd" "$cmd"
}

# -------------------------------------------------------------------- etcd
# The etcd main package is the root of go.etcd.io/etcd/server/v3, whose
# go.mod replaces its sibling modules with ../api etc., so `go install` is
# refused; build it from a throw-away module instead (the sibling modules
# are required at the same version by server's go.mod).
build_etcd() {
  local work="$1" v="$ETCD_VERSION"
  printf 'module kube-nbd.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$v" >"$work/go.mod"
  (cd "$work" && "$GO" build -mod=mod -trimpath \
      -ldflags "$LDFLAGS_STRIP -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$v" \
      -o "$work/etcd" go.etcd.io/etcd/server/v3) >&2
  install_bin "$work/etcd" etcd
}

# ------------------------------------------------------------ csi-attacher
# external-attacher's go.mod pins its k8s.io modules with replace directives
# (to the versions it already requires), and `go install pkg@version` refuses
# any module with replace directives; so, as for etcd, build it from a
# throw-away module that requires it and repeats those replaces.
build_csi_attacher() {
  local work="$1" v="$CSI_ATTACHER_VERSION" mod="github.com/kubernetes-csi/external-attacher/v4"
  local amod gomod goline reps
  amod="$("$GO" mod download -json "$mod@$v")" || die "$mod@$v is not on the module proxy: $amod"
  gomod="$(json_field GoMod <<<"$amod")"
  [ -f "$gomod" ] || die "cannot find go.mod of $mod@$v"
  goline="$(awk '$1 == "go" {print $2; exit}' "$gomod")"
  # Single-line replaces (`replace a => b v`) and the lines of a replace block; local paths would not resolve here.
  reps="$(sed -n -e 's/^replace \(.* => .*\)$/\1/p' -e '/^replace (/,/^)/{/=>/p}' "$gomod")"
  if grep -q '=> \.' <<<"$reps"; then die "$mod@$v replaces a module with a local path; cannot build it from the proxy"; fi
  {
    printf 'module kube-nbd.local/csi-attacher-build\n\ngo %s\n\nrequire %s %s\n\n' "$goline" "$mod" "$v"
    [ -z "$reps" ] || printf 'replace (\n%s\n)\n' "$reps"
  } >"$work/go.mod"
  (cd "$work" && "$GO" build -mod=mod -trimpath -ldflags "$LDFLAGS_STRIP -X main.version=$v" \
      -o "$work/csi-attacher" "$mod/cmd/csi-attacher") >&2
  install_bin "$work/csi-attacher" csi-attacher
}

# ----------------------------------------------------- csi-sanity and helm
# Neither module has replace directives, so plain `go install pkg@version`.
go_install() {
  local work="$1" comp="$2" pkg="$3" ldflags="$4"
  (cd "$work" && GOBIN="$work/gobin" "$GO" install -trimpath -ldflags "$ldflags" "$pkg") >&2
  install_bin "$work/gobin/$comp" "$comp"
}
build_csi_sanity() {
  go_install "$1" csi-sanity "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION" \
    "$LDFLAGS_STRIP -X main.VERSION=$CSI_TEST_VERSION"
}
build_helm() {
  go_install "$1" helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "$LDFLAGS_STRIP -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

# -------------------------------------------------------------------- main
build_one() {
  local comp="$1" work start end
  work="$(mktemp -d "${TMPDIR:-/tmp}/kube-nbd-$comp.XXXXXX")"
  WORKDIRS+=("$work")
  log "building $comp $(version_of "$comp") ..."
  start=$(date +%s)
  case "$comp" in
    kube-apiserver|kube-controller-manager) build_kubernetes_command "$work" "$comp" ;;
    etcd) build_etcd "$work" ;;
    csi-sanity) build_csi_sanity "$work" ;;
    csi-attacher) build_csi_attacher "$work" ;;
    helm) build_helm "$work" ;;
  esac
  end=$(date +%s)
  log "built $comp $(version_of "$comp") in $((end - start))s -> $(bin_path "$comp")"
  rm -rf "$work"
}

WORKDIRS=()
cleanup() { local d; for d in "${WORKDIRS[@]+"${WORKDIRS[@]}"}"; do rm -rf "$d"; done; }
trap cleanup EXIT

missing=()
for c in "${COMPONENTS[@]}"; do
  [ -x "$(bin_path "$c")" ] || missing+=("$c")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$CHECK_ONLY" = 1 ]; then
    log "missing: ${missing[*]} (run $0 to build)"
    exit 1
  fi
  setup_go
  mkdir -p "$CACHE_ROOT"
  # One builder at a time (e.g. two test scripts starting together).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.k8s-test-binaries.lock"
    flock 9
  fi
  total_start=$(date +%s)
  for c in "${missing[@]}"; do
    if [ -x "$(bin_path "$c")" ]; then
      log "$c $(version_of "$c") was built meanwhile by another run"
      continue
    fi
    build_one "$c"
  done
  log "all builds done in $(( $(date +%s) - total_start ))s"
fi

if [ "$PRINT_ENV" = 1 ]; then
  names=() dirs=""
  for c in "${COMPONENTS[@]}"; do
    n="$(env_name "$c")"
    names+=("$n")
    printf '%s=%q\n' "$n" "$(bin_path "$c")"
    dirs="${dirs:+$dirs:}$(dirname "$(bin_path "$c")")"
  done
  printf 'KUBE_NBD_K8S_BIN_PATH=%q\n' "$dirs"
  echo "export ${names[*]} KUBE_NBD_K8S_BIN_PATH"
else
  for c in "${COMPONENTS[@]}"; do
    p="$(bin_path "$c")"
    printf '%-15s %-9s %s (%s)\n' "$c" "$(version_of "$c")" "$p" "$(du -h "$p" | cut -f1)"
  done
fi
