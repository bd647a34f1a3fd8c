#!/usr/bin/env bash
# Builds what the real lane (`make e2e`) needs on top of the control plane: kubelet and kube-proxy
# (the same Kubernetes version and module set as hack/build-binaries.sh), CoreDNS (cluster DNS),
# crictl (to tear sandboxes down through the CRI), a pause binary (no Debian package ships the
# pod sandbox image) and a stand-in for the example apps' worker images. From the Go module proxy into a cache outside the repository; only missing
# binaries are built. `make test` never calls this, so the fast lane does not pay for it.
# Prints the bin directory on stdout's last line.
#   NIGHTSHIFT_CACHE   cache root (default: ~/.cache/nightshift)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache=${NIGHTSHIFT_CACHE:-$HOME/.cache/nightshift}
bin="$cache/bin/node-k8s-$KUBERNETES_VERSION-coredns-$COREDNS_VERSION-crictl-$CRICTL_VERSION"
work="$cache/build"
mkdir -p "$bin" "$work"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw GOWORK=off
log() { printf '[build-node-binaries %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { [ -x "$bin/$1" ]; }

k8s_minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)

build_node() {
  local missing=()
  for b in kubelet kube-proxy; do have "$b" || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return
  # The control plane's module (go.mod maps every k8s.io staging module to its published version)
  # already resolves kubelet's and kube-proxy's dependencies; a copy gets their imports, so the
  # control plane's own go.mod and go.sum are never changed.
  local cp_mod="$work/kubernetes-$KUBERNETES_VERSION" mod="$work/kubernetes-node-$KUBERNETES_VERSION"
  if [ ! -f "$cp_mod/go.sum" ]; then
    log "resolving the Kubernetes module set first (hack/build-binaries.sh)"
    bash "$here/build-binaries.sh" >/dev/null
  fi
  if [ ! -f "$mod/tools.go" ]; then
    mkdir -p "$mod"
    cp "$cp_mod/go.mod" "$cp_mod/go.sum" "$mod/"
    (cd "$mod"
     go mod edit -module nightshift.dev/hack/kubernetes-node
     printf 'package hack\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kubelet/app"\n\t_ "k8s.io/kubernetes/cmd/kube-proxy/app"\n)\n' > tools.go.new
     mv tools.go.new tools.go
     go mod tidy >&2)
  fi
  local ver="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean"
  for b in "${missing[@]}"; do
    log "go build $b (cold: kubelet 7-20 min on 2 cores, then kube-proxy under a minute)"
    (cd "$mod" && go build -trimpath -ldflags "-s -w $ver" -o "$bin/$b.tmp" "k8s.io/kubernetes/cmd/$b") && mv "$bin/$b.tmp" "$bin/$b"
  done
}

build_go_install() {  # name module@version [ldflags]
  have "$1" && return
  log "$1: go install $2"
  local tmp="$work/gobin-$1"
  mkdir -p "$tmp"
  GOBIN="$tmp" go install -trimpath -ldflags "-s -w ${3:-}" "$2"
  mv "$tmp/$1" "$bin/$1"
}

build_pause() {
  # The pod sandbox's one process: sleeps, reaps children, exits 0 on SIGINT/SIGTERM, as
  # registry.k8s.io/pause does. Static, so the image holds nothing else.
  have pause && return
  log "pause: go build"
  local mod="$work/pause"
  mkdir -p "$mod"
  cat >"$mod/main.go" <<'GO'
// Stand-in for registry.k8s.io/pause: sleeps, reaps zombies, exits 0 on SIGINT/SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			if pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
  (cd "$mod" && { [ -f go.mod ] || go mod init nightshift.dev/hack/pause >/dev/null 2>&1; } \
     && go build -trimpath -ldflags "-s -w" -o "$bin/pause.tmp" .) && mv "$bin/pause.tmp" "$bin/pause"
}

build_standin() {
  # The seed catalogues' app jobs run their own images (node dist/jobs.js ..., python -m ...): a
  # static stand-in installed as `node` and `python` says what it was asked to run and exits 0.
  have standin && return
  log "standin: go build"
  local mod="$work/standin"
  mkdir -p "$mod"
  cat >"$mod/main.go" <<'GO'
// Stand-in for an application's worker image: prints its command line and exits 0.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Printf("stand-in ran: %s\n", strings.Join(os.Args, " "))
}
GO
  (cd "$mod" && { [ -f go.mod ] || go mod init nightshift.dev/hack/standin >/dev/null 2>&1; } \
     && go build -trimpath -ldflags "-s -w" -o "$bin/standin.tmp" .) && mv "$bin/standin.tmp" "$bin/standin"
}

build_node
build_go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION"
build_go_install crictl "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
build_pause
build_standin
log "ready: $bin"
echo "$bin"
