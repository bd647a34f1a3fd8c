#!/usr/bin/env bash
# The real lane's host side (`make e2e`; tests/e2e drives it): a container engine to build the
# project's image, a containerd of its own with the CRI for a real kubelet, CNI networking,
# kube-proxy, and the kubelet joining the project's test control plane (tests/support/cluster.py
# with real_pods=True, started by the test). Cluster DNS runs as pods (hack/e2e/coredns.yaml).
#
#   lane.sh check        what is missing to run the lane (exit 1 naming it)
#   lane.sh install      Debian: apt-get install what is missing
#   lane.sh engine-up    dockerd (ours, unless one already answers) and our containerd
#   lane.sh images       base image (python:3.11-slim, or made with mmdebstrap), the project image,
#                        pause and coredns images; all loaded into our containerd, never pulled
#   lane.sh node-up      CNI config, kubelet, kube-proxy           (needs KUBECONFIG)
#   lane.sh down         stop all of it by PID, tear down what it made
#   lane.sh docker ARGS  docker with the engine and client the lane uses
#
# Everything it starts or writes lives under E2E_DIR (state, sockets, configs, logs, the kubelet's
# and containerd's roots); host-wide changes it cannot avoid (iptables rules, links, cgroups, a few
# sysctls, CNI's cache) are undone by tests/support/hoststate.py from a snapshot taken before.
# Nothing is written to /etc.
#
# Environment:
#   E2E_DIR           state directory (required; a fresh one per run)
#   KUBECONFIG        the control plane's admin kubeconfig (node-up)
#   KUBELET_KUBECONFIG, KUBE_PROXY_KUBECONFIG   their own identities (system:node:<NODE_NAME> in
#                     system:nodes, system:kube-proxy); default: KUBECONFIG
#   NIGHTSHIFT_CACHE  cache root (default ~/.cache/nightshift): node binaries, the docker data root
#   IMAGE             the project image's name (default ghcr.io/nightshift-dev/nightshift:e2e)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../versions.env
source "$repo/hack/versions.env"

cache=${NIGHTSHIFT_CACHE:-$HOME/.cache/nightshift}
E2E_DIR=${E2E_DIR:-}
IMAGE=${IMAGE:-ghcr.io/nightshift-dev/nightshift:e2e}
BASE_IMAGE=local/nightshift-base:python3.11-bookworm   # made with mmdebstrap when no registry answers
# containerd's sandbox image name; ours is built here (no Debian package ships one).
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
COREDNS_IMAGE=local/coredns:$COREDNS_VERSION
POD_CIDR=10.88.0.0/16
NODE_NAME=${NODE_NAME:-nightshift-e2e}
CLUSTER_DNS=10.0.0.10   # the kube-dns Service's ClusterIP (inside --service-cluster-ip-range)

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
need_dir() { [ -n "$E2E_DIR" ] || die "E2E_DIR must be set"; mkdir -p "$E2E_DIR"/{run,logs}; }
alive() { [ -f "$E2E_DIR/run/$1.pid" ] && kill -0 "$(cat "$E2E_DIR/run/$1.pid")" 2>/dev/null; }
start_bg() {  # name cmd... : a daemon in its own session, pid in run/name.pid, output in logs/name.log
  local name=$1; shift
  alive "$name" && { log "$name already running"; return; }
  setsid "$@" >>"$E2E_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$E2E_DIR/run/$name.pid"
  log "started $name (pid $!)"
}
stop_pid() {  # name : SIGTERM by PID, SIGKILL after 20 s
  local name=$1 pid
  [ -f "$E2E_DIR/run/$name.pid" ] || return 0
  pid=$(cat "$E2E_DIR/run/$name.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; }
    log "stopped $name (pid $pid)"
  fi
  rm -f "$E2E_DIR/run/$name.pid"
}
wait_for() {  # seconds what command...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "timed out after ${t}s waiting for $what"
}
node_bin() { bash "$repo/hack/build-node-binaries.sh" 2>/dev/null | tail -n1; }
cni_bin_dir() { local d; for d in /usr/lib/cni /opt/cni/bin; do [ -x "$d/bridge" ] && { echo "$d"; return; }; done; }
ctr_() { ctr --address "$E2E_DIR/run/containerd.sock" --namespace k8s.io "$@"; }

# --- the container engine's client -----------------------------------------------------------
# The project's Dockerfile needs BuildKit (RUN --mount). A Docker CLI >= 23 builds with buildx only
# (a CLI without the plugin refuses); an older one (Debian's 20.10) has BuildKit built in.
docker_cli() {
  local c
  for c in $(type -ap docker) /usr/bin/docker; do
    [ -x "$c" ] || continue
    if "$c" buildx version >/dev/null 2>&1; then echo "$c"; return; fi
    local major; major=$("$c" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
    [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null && { echo "$c"; return; }
  done
}
# An engine that already answers (the host's Docker) is used as it is; else ours, started by
# engine-up on a socket of its own. docker_env prints the DOCKER_HOST to use.
docker_host() {
  if [ -n "$E2E_DIR" ] && [ -S "$E2E_DIR/run/docker.sock" ] && alive dockerd; then echo "unix://$E2E_DIR/run/docker.sock"; return; fi
  echo "${DOCKER_HOST:-unix:///var/run/docker.sock}"
}
docker_() { DOCKER_BUILDKIT=1 DOCKER_HOST=$(docker_host) "$DOCKER" "$@"; }

# --- check / install -------------------------------------------------------------------------
missing() {  # prints Debian package names for what is missing
  local m=()
  [ -n "$(docker_cli)" ] || m+=(docker.io)
  command -v dockerd >/dev/null || docker_host_answers || m+=(docker.io)
  command -v containerd >/dev/null || m+=(containerd)
  command -v runc >/dev/null || m+=(runc)
  command -v ctr >/dev/null || m+=(containerd)
  command -v iptables >/dev/null || m+=(iptables)
  command -v ip >/dev/null || m+=(iproute2)
  command -v unshare >/dev/null || m+=(util-linux)
  [ -n "$(cni_bin_dir)" ] || m+=(containernetworking-plugins)
  command -v mmdebstrap >/dev/null || m+=(mmdebstrap)   # only used without a registry; cheap to have
  command -v go >/dev/null || m+=(golang-go)
  printf '%s\n' "${m[@]}" | sort -u | tr '\n' ' '
}
docker_host_answers() { local c; c=$(docker_cli); [ -n "$c" ] && "$c" info >/dev/null 2>&1; }
check() {
  [ "$(id -u)" -eq 0 ] || die "the real lane needs root (a kubelet, containerd, iptables, mounts)"
  [ "$(uname -s)" = Linux ] || die "the real lane needs Linux"
  local m; m=$(missing)
  [ -z "${m// /}" ] || die "missing: $m(Debian: apt-get install $m; or run 'hack/e2e/lane.sh install')"
  log "host has what the real lane needs"
}
install_packages() {
  local m; m=$(missing)
  [ -z "${m// /}" ] && { log "nothing to install"; return; }
  command -v apt-get >/dev/null || die "missing: $m; install them with your package manager"
  log "apt-get install $m"
  apt-get update -qq
  # Without systemd as PID 1 the packages' scripts cannot start the daemons ("policy-rc.d denied"):
  # harmless, the lane starts its own.
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $m >/dev/null
}

# --- engine ----------------------------------------------------------------------------------
# Machine-specific settings, each on only where the machine needs it:
# - without CAP_SYS_RESOURCE in the bounding set (some VMs' init drops it) no process may lower its
#   oom_score_adj, and runc fails every sandbox ("can't get final child's PID from pipe"):
#   containerd must clamp the sandbox's -998 to our own value.
needs_restrict_oom() { local bnd; bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status); (( (16#$bnd >> 24 & 1) == 0 )); }
# - kubelet >= 1.35 refuses cgroup v1 unless told otherwise.
cgroup_v1() { [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; }

engine_up() {
  need_dir
  DOCKER=$(docker_cli); [ -n "$DOCKER" ] || die "no Docker CLI that can build with BuildKit (docker.io, or docker with buildx)"
  if "$DOCKER" info >/dev/null 2>&1 && ! alive dockerd; then
    log "using the running Docker engine ($DOCKER)"
  else
    # Ours: its own socket, exec root and pid file; its data root in the cache, so images and the
    # build cache survive to the next run (they are a cache, like the Go build cache). No bridge,
    # no iptables, no ip_forward, no masquerade: builds use the host's network (--network=host).
    mkdir -p "$cache/docker"
    start_bg dockerd dockerd --host="unix://$E2E_DIR/run/docker.sock" --data-root="$cache/docker" \
      --exec-root="$E2E_DIR/run/docker-exec" --pidfile="$E2E_DIR/run/docker-daemon.pid" \
      --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
      --userland-proxy=false --storage-driver=overlay2
    wait_for 60 "dockerd (see $E2E_DIR/logs/dockerd.log)" env DOCKER_HOST="unix://$E2E_DIR/run/docker.sock" "$DOCKER" info
  fi
  containerd_up
}

containerd_up() {
  # A containerd of the lane's own for the kubelet (the host's, if any, is left alone): its own
  # socket, root, state and CNI config under E2E_DIR.
  local cni; cni=$(cni_bin_dir)
  mkdir -p "$E2E_DIR/cni/net.d" "$E2E_DIR/containerd"
  local restrict=false; needs_restrict_oom && { restrict=true; log "no CAP_SYS_RESOURCE: restrict_oom_score_adj on"; }
  cat >"$E2E_DIR/containerd/config.toml" <<EOF
version = 2
root = "$E2E_DIR/containerd/root"
state = "$E2E_DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$E2E_DIR/run/containerd.sock"
[ttrpc]
  address = "$E2E_DIR/run/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = $restrict
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni"
    conf_dir = "$E2E_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$E2E_DIR/containerd/certs.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$E2E_DIR/containerd/opt"
EOF
  # The pod network: a bridge with masquerading; host-local IPAM keeps its leases under E2E_DIR;
  # portmap for hostPorts; firewall adds the FORWARD accepts a DROP policy (Docker's) would block.
  cat >"$E2E_DIR/cni/net.d/10-nightshift-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "nightshift-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "nse2e0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$E2E_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"}
  ]
}
EOF
  start_bg containerd containerd --config "$E2E_DIR/containerd/config.toml"
  wait_for 30 "containerd (see $E2E_DIR/logs/containerd.log)" ctr_ version
}

# --- images ----------------------------------------------------------------------------------
registry_answers() { docker_ image inspect python:3.11-slim >/dev/null 2>&1 || timeout 60 "$DOCKER" --host "$(docker_host)" pull -q python:3.11-slim >/dev/null 2>&1; }

base_image() {
  # python:3.11-slim where a registry answers; else the same Python (Debian bookworm's 3.11) in a
  # base made from Debian's packages with mmdebstrap. Made once, kept in the engine.
  if registry_answers; then echo python:3.11-slim; return; fi
  if ! docker_ image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "no registry answers: making $BASE_IMAGE with mmdebstrap (about a minute)"
    local tar="$E2E_DIR/base-rootfs.tar"
    # pip installs system-wide in the image: Debian's EXTERNALLY-MANAGED marker goes, as in the
    # python images (PEP 668 is about the host's packages, there are none to protect here).
    mmdebstrap --quiet --variant=minbase --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "$tar" >&2
    docker_ import --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' "$tar" "$BASE_IMAGE" >/dev/null
    rm -f "$tar"
  fi
  echo "$BASE_IMAGE"
}

static_image() {  # name entrypoint-json user src:dest... : static binaries alone in an image
  local name=$1 entry=$2 user=$3; shift 3
  local dir="$E2E_DIR/img" sum f
  sum=$(for f in "$@"; do echo "$f $(sha256sum "${f%%:*}" | cut -c1-64)"; done | sha256sum | cut -c1-64)
  # Rebuilt only when a binary changed (the label holds their checksum).
  [ "$(docker_ image inspect -f '{{index .Config.Labels "nightshift.dev/content"}}' "$name" 2>/dev/null)" = "$sum" ] && return
  rm -rf "$dir"; mkdir -p "$dir/root"
  for f in "$@"; do command install -D -m 0755 "${f%%:*}" "$dir/root/${f#*:}"; done
  tar -C "$dir/root" -cf "$dir/image.tar" .
  docker_ import --change "ENTRYPOINT $entry" --change "USER $user" --change 'ENV PATH=/bin' \
    --change "LABEL nightshift.dev/content=$sum" "$dir/image.tar" "$name" >/dev/null
  rm -rf "$dir"
}

# The example apps' worker images, as the seed catalogues name them.
app_images() { grep -h '^ *image: ' "$repo"/manifests/examples/*/*.yaml | awk '{print $2}' | sort -u; }

images() {
  need_dir
  DOCKER=$(docker_cli)
  local base bin t0; base=$(base_image); bin=$(node_bin)
  local args=(--network=host --build-arg "PYTHON_IMAGE=$base" -t "$IMAGE")
  # Behind a TLS-intercepting proxy (extra CAs in /usr/local/share/ca-certificates, as on these
  # VMs and corporate hosts) pip in the build needs the host's bundle: an optional build secret.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    args+=(--secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt)
    log "host has extra CA certificates: passed to the build"
  fi
  log "docker build $IMAGE (FROM $base)"
  t0=$(date +%s)
  (cd "$repo" && docker_ build --progress=plain "${args[@]}" . >"$E2E_DIR/logs/docker-build.log" 2>&1) \
    || { tail -40 "$E2E_DIR/logs/docker-build.log" >&2; die "docker build failed"; }
  echo "$(( $(date +%s) - t0 ))" >"$E2E_DIR/run/build-seconds"
  static_image "$PAUSE_IMAGE" '["/pause"]' 65535:65535 "$bin/pause:pause"
  static_image "$COREDNS_IMAGE" '["/coredns"]' 65534:65534 "$bin/coredns:coredns"
  local apps=() a
  for a in $(app_images); do
    static_image "$a" '["/bin/node"]' 65534:65534 "$bin/standin:bin/node" "$bin/standin:bin/python"
    apps+=("$a")
  done
  log "loading images into the node's containerd (namespace k8s.io: what the kubelet sees)"
  docker_ save "$IMAGE" "$PAUSE_IMAGE" "$COREDNS_IMAGE" "${apps[@]}" | ctr_ images import - >/dev/null
  ctr_ images ls -q >&2
}

# --- node ------------------------------------------------------------------------------------
node_up() {
  need_dir
  [ -n "${KUBECONFIG:-}" ] || die "KUBECONFIG must point at the control plane's admin kubeconfig"
  local bin ip ca; bin=$(node_bin)
  # The node's address: the one the default route leaves by (as tests/support/cluster.py's).
  ip=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("1.1.1.1", 9)); print(s.getsockname()[0])')
  ca="$E2E_DIR/cluster-ca.crt"
  python3 - "$KUBECONFIG" "$ca" <<'EOF'
import base64, sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
open(sys.argv[2], "wb").write(base64.b64decode(cfg["clusters"][0]["cluster"]["certificate-authority-data"]))
EOF
  # Pods resolve through the kube-dns Service; its upstream is the host's resolver, which pods can
  # reach only if it is not on loopback (systemd-resolved's stub is): then its real servers' file.
  local resolv=/etc/resolv.conf
  if grep -qE '^nameserver 127\.' /etc/resolv.conf && [ -f /run/systemd/resolve/resolv.conf ]; then resolv=/run/systemd/resolve/resolv.conf; fi
  local cgv1=false; cgroup_v1 && { cgv1=true; log "cgroup v1: failCgroupV1 off"; }
  mkdir -p "$E2E_DIR/kubelet" "$E2E_DIR/pod-logs"
  cat >"$E2E_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$E2E_DIR/run/containerd.sock
# cgroupfs works with and without systemd as PID 1 (containerd's runc uses it by default too).
cgroupDriver: cgroupfs
failCgroupV1: $( $cgv1 && echo false || echo true )
failSwapOn: false
podLogsDir: $E2E_DIR/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $ca}   # the API server calls the kubelet (logs, exec) with the admin cert
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
address: $ip
healthzBindAddress: 127.0.0.1
healthzPort: 0
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
resolvConf: $resolv
# The images were loaded, never pulled: garbage collection must not remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
# The kubelet sets its kernel tunables (vm.overcommit_memory, kernel.panic...; true would refuse
# to start on a host that differs); tests/support/hoststate.py puts them back afterwards.
protectKernelDefaults: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 60
EOF
  start_bg kubelet "$bin/kubelet" --config="$E2E_DIR/kubelet.yaml" --kubeconfig="${KUBELET_KUBECONFIG:-$KUBECONFIG}" \
    --hostname-override="$NODE_NAME" --node-ip="$ip" --root-dir="$E2E_DIR/kubelet" \
    --cert-dir="$E2E_DIR/kubelet/pki" --v=1
  cat >"$E2E_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${KUBE_PROXY_KUBECONFIG:-$KUBECONFIG}}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
# NodePorts on the node's address only: with localhost NodePorts kube-proxy turns route_localnet on.
nodePortAddresses: ["$ip/32"]
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256   # also what node-up waits on
# Zero: leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_bg kube-proxy "$bin/kube-proxy" --config="$E2E_DIR/kube-proxy.yaml" --v=1
  wait_for 60 "kube-proxy healthy (see $E2E_DIR/logs/kube-proxy.log)" python3 -c \
    'import urllib.request; urllib.request.urlopen("http://127.0.0.1:10256/healthz", timeout=2)'
  alive kubelet || die "the kubelet exited; see $E2E_DIR/logs/kubelet.log"
}

# --- down ------------------------------------------------------------------------------------
down() {
  need_dir
  local bin; bin=$(node_bin)
  stop_pid kube-proxy
  stop_pid kubelet
  if [ -S "$E2E_DIR/run/containerd.sock" ]; then
    # Sandboxes the kubelet did not remove: stopping one through the CRI runs CNI DEL (veth, IPAM,
    # iptables) and unmounts its volumes' mounts.
    "$bin/crictl" --runtime-endpoint "unix://$E2E_DIR/run/containerd.sock" --timeout 30s rmp -fa >/dev/null 2>&1 || true
  fi
  # kube-proxy's chains (KUBE-SERVICES, ...), in iptables and nftables.
  "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_pid containerd
  stop_pid dockerd
  # containerd-shims outlive containerd by design; ours carry our socket's path on their command line.
  local p
  for p in $(pgrep -f -- "-address $E2E_DIR/run/containerd.sock" || true); do kill -9 "$p" 2>/dev/null || true; done
  # Mounts under E2E_DIR (the kubelet bind-mounts its root onto itself, pods' volumes, overlay
  # snapshots, dockerd's netns), deepest first.
  awk -v d="$E2E_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip link del nse2e0 2>/dev/null || true
  log "down"
}

main() {
  [ $# -gt 0 ] || { sed -n '2,24p' "$0"; exit 2; }
  if [ "$1" = docker ]; then  # lane.sh docker ARGS: the engine and client the lane uses (for the tests)
    shift; need_dir; DOCKER=$(docker_cli); docker_ "$@"; return
  fi
  local phase
  for phase in "$@"; do
    case $phase in
      check) check ;; install) install_packages ;; engine-up) engine_up ;; images) images ;;
      node-up) node_up ;; down) down ;;
      *) die "unknown phase $phase" ;;
    esac
  done
}
main "$@"
