#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok and helm from
# the Go module proxy into a versioned cache outside the repository. Only missing binaries are built.
# Prints the bin directory on stdout's last line.
#   NIGHTSHIFT_CACHE   cache root (default: ~/.cache/nightshift)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${NIGHTSHIFT_CACHE:-$HOME/.cache/nightshift}
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
work="$cache/build"
mkdir -p "$bin" "$work"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw GOWORK=off
log() { printf '[build-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { [ -x "$bin/$1" ]; }

k8s_minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
staging_version="v0.${KUBERNETES_VERSION#v1.}"

build_kubernetes() {
  local missing=()
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do have "$b" || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "kubernetes $KUBERNETES_VERSION: building ${missing[*]} (cold: ~10-20 min on 2 cores)"
  local mod="$work/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$mod"
  if [ ! -f "$mod/go.sum" ]; then
    (cd "$mod"
     rm -f go.mod
     go mod init nightshift.dev/hack/kubernetes >/dev/null 2>&1
     # k8s.io/kubernetes replaces its staging modules with local paths; point each at its published version.
     gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
     for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod"); do
       go mod edit -replace "$m=$m@$staging_version"
     done
     go mod edit -require "k8s.io/kubernetes@$KUBERNETES_VERSION"
     printf 'package hack\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > tools.go
     log "resolving modules"
     go mod tidy >&2)
  fi
  local ver="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean"
  ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
  for b in "${missing[@]}"; do
    log "go build $b"
    (cd "$mod" && go build -trimpath -ldflags "-s -w $ver" -o "$bin/$b.tmp" "k8s.io/kubernetes/cmd/$b") && mv "$bin/$b.tmp" "$bin/$b"
  done
}

build_etcd() {
  have etcd && return
  log "etcd $ETCD_VERSION: building"
  local mod="$work/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  (cd "$mod"
   [ -f go.mod ] || go mod init nightshift.dev/hack/etcd >/dev/null 2>&1
   gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
   # The server's own replace directives point at sibling folders; use the published modules.
   for m in $(sed -n 's#^\s*\(go.etcd.io/etcd/[a-z0-9/]*\) => \.\./.*#\1#p' "$gomod"); do
     go mod edit -replace "$m=$m@$ETCD_VERSION"
   done
   go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
   printf 'package hack\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > tools.go
   go mod tidy >&2
   go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3) && mv "$bin/etcd.tmp" "$bin/etcd"
}

build_go_install() {  # name module@version ldflags
  have "$1" && return
  log "$1: go install $2"
  local tmp="$work/gobin-$1"
  mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w ${3:-}" "$2"
  mv "$tmp/$1" "$bin/$1"
}

build_kubernetes
build_etcd
build_go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
build_go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"
log "ready: $bin"
echo "$bin"
