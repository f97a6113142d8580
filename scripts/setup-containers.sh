#!/usr/bin/env bash
# A container engine for pipeline steps on a machine without Docker: rootful podman
# from Debian's packages, serving the Docker-compatible API that the `docker` SDK
# drives. Idempotent; needs root. Prints the DOCKER_HOST to use as its last line.
#
#   scripts/setup-containers.sh            # set up (or check) and print DOCKER_HOST
#
# What it does (see docs: ../shared/specs/pipelines.md, "Containers on these machines"):
#  1. installs podman, catatonit (the init of init=True) and busybox-static when missing;
#  2. host fix 1: explicit default ulimits at or below the host's, since crun cannot
#     raise rlimits here (no CAP_SYS_RESOURCE);
#  3. host fix 2: on a hybrid cgroup layout, mounts the hugetlb controller on v1 so
#     crun does not refuse the layout (not kept across reboots: rerun this script);
#  4. makes podman's bridge network fail loudly (CNI backend, empty config dir):
#     steps run with network "none" (or "host" when a setting allows), never on the
#     10.88.x bridge;
#  5. builds localhost/busybox:latest from busybox-static, without any registry;
#  6. starts `podman system service` on a unix socket (once; reuses a live one).
set -euo pipefail

SOCK_DIR="${PODMAN_SOCK_DIR:-/run/portal-podman}"
SOCK="$SOCK_DIR/podman.sock"
CONF=/etc/containers/containers.conf
NET_DIR=/etc/containers/portal-no-networks

say() { echo "== setup-containers: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  echo "!! setup-containers: needs root (podman is run rootful here)" >&2
  exit 2
fi

missing=()
command -v podman >/dev/null || missing+=(podman)
# The init process of `--init` / the SDK's init=True.
[[ -x /usr/libexec/podman/catatonit ]] || missing+=(catatonit)
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if [[ ${#missing[@]} -gt 0 ]]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# Host fix 1 and the loud bridge: our own containers.conf (rewritten when it differs).
nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
[[ "$nofile" == unlimited || "$nofile" -gt 20000 ]] && nofile=20000
[[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
mkdir -p /etc/containers "$NET_DIR"
want=$(cat <<EOF
# Written by the Ops Portal's scripts/setup-containers.sh.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[network]
# No bridge: pipeline steps use network "none" (or "host" when allowed).
network_backend = "cni"
cni_plugin_dirs = ["$NET_DIR"]
network_config_dir = "$NET_DIR"
EOF
)
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$want" ]]; then
  say "writing $CONF"
  printf '%s\n' "$want" >"$CONF"
fi

# Host fix 2: hugetlb on cgroup v1 when the layout is hybrid.
if [[ -d /sys/fs/cgroup/unified ]] && ! mountpoint -q /sys/fs/cgroup/hugetlb 2>/dev/null; then
  say "mounting the hugetlb controller on cgroup v1"
  mkdir -p /sys/fs/cgroup/hugetlb
  mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb || say "hugetlb mount failed (continuing)"
fi

# localhost/busybox:latest from busybox-static.
if ! podman image exists localhost/busybox:latest; then
  say "building localhost/busybox:latest from busybox-static"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/opt/fxquants/pipeline"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$root/bin/$applet"
  done
  echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
  echo "root:x:0:" >"$root/etc/group"
  tar -C "$root" -cf "$root.tar" .
  podman import --quiet --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin' \
    "$root.tar" localhost/busybox:latest >/dev/null
  rm -f "$root.tar"
fi

# The Docker-compatible API socket.
alive() { curl -sf --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
if ! alive; then
  say "starting podman system service on $SOCK"
  mkdir -p "$SOCK_DIR"
  rm -f "$SOCK"
  setsid nohup podman system service --time=0 "unix://$SOCK" \
    >"$SOCK_DIR/service.log" 2>&1 </dev/null &
  echo $! >"$SOCK_DIR/service.pid"
  for _ in $(seq 1 100); do
    alive && break
    sleep 0.1
  done
  alive || { echo "!! setup-containers: the podman socket does not answer (see $SOCK_DIR/service.log)" >&2; exit 1; }
fi

# A smoke test: a container with no network runs and gives its exit code.
if ! out=$(podman run --rm --network none --init localhost/busybox:latest sh -c 'echo ok' 2>&1) \
   || [[ "$out" != *ok* ]]; then
  echo "!! setup-containers: a test container failed: $out" >&2
  exit 1
fi
echo "DOCKER_HOST=unix://$SOCK"
