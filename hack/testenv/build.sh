#!/usr/bin/env bash
# Builds the Kubernetes test environment (kube-apiserver, kube-controller-manager
# and etcd) from the Go module proxy into a cache outside the clone, then links
# the binaries into bin/. A second run with the same versions only re-links.
#
# Build times on 2 cores: kube-apiserver about 7 minutes the first time;
# kube-controller-manager then about 1.5 minutes more, since most of its
# packages are already in the Go build cache (longer from a cold cache).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.7}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${HEALER_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/healer/testenv}/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}
bin="$root/bin"
mkdir -p "$cache" "$bin"

staging_version="v0${K8S_VERSION#v1}"   # v1.36.3 -> v0.36.3

# The first entry of GOPROXY that is a URL (the "go" command's own setting).
proxy_url() {
  if [ -n "${GOPROXY_URL:-}" ]; then echo "$GOPROXY_URL"; return; fi
  local p
  for p in $(go env GOPROXY | tr ',|' '  '); do
    case "$p" in http://*|https://*) echo "${p%/}"; return ;; esac
  done
  echo "https://proxy.golang.org"
}

# Built from the module proxy, the Kubernetes binaries would report
# v0.0.0-master; stamp the real version the way the Kubernetes release build
# does.
k8s_ldflags() {
  local v=${K8S_VERSION#v} flags="-s" pkg
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=${major} -X $pkg.gitMinor=${minor} -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}

# True when the cached Kubernetes binary $1 exists and reports the wanted version.
k8s_current() {
  [ -x "$cache/$1" ] &&
    [ "$("$cache/$1" --version 2>/dev/null)" = "Kubernetes ${K8S_VERSION}" ]
}

# Builds k8s.io/kubernetes/cmd/$1 (kube-apiserver, kube-controller-manager)
# into the cache.
build_k8s() {
  local cmd=$1 work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "testenv: building $cmd ${K8S_VERSION} (first time takes several minutes)" >&2
  (
    cd "$work"
    curl -fsS "$(proxy_url)/k8s.io/kubernetes/@v/${K8S_VERSION}.mod" -o upstream.mod
    {
      echo "module healer.local/testenv/$cmd"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes ${K8S_VERSION}"
      echo
      # Every staging module that kubernetes' go.mod points at ./staging is
      # taken from the proxy at the matching v0 version instead.
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$staging_version"'#p' upstream.mod
    } > go.mod
    cat > tools.go <<GO
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/$cmd"
GO
    GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
    GOFLAGS=-mod=mod go build -trimpath -ldflags="$(k8s_ldflags)" -o "$cache/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  )
  mv "$cache/$cmd.tmp" "$cache/$cmd"
}

build_etcd() {
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  echo "testenv: building etcd ${ETCD_VERSION}" >&2
  (
    cd "$work"
    cat > go.mod <<MOD
module healer.local/testenv/etcd

go 1.26
MOD
    cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null
    GOFLAGS=-mod=mod go mod tidy >/dev/null
    GOFLAGS=-mod=mod go build -trimpath -ldflags=-s -o "$cache/etcd.tmp" .
  )
  mv "$cache/etcd.tmp" "$cache/etcd"
}

[ -x "$cache/etcd" ] || build_etcd
k8s_current kube-apiserver || build_k8s kube-apiserver
# The disruption controller (PodDisruptionBudget status) for tests that evict.
k8s_current kube-controller-manager || build_k8s kube-controller-manager

ln -sfn "$cache/kube-apiserver" "$bin/kube-apiserver"
ln -sfn "$cache/kube-controller-manager" "$bin/kube-controller-manager"
ln -sfn "$cache/etcd" "$bin/etcd"
echo "testenv: kube-apiserver and kube-controller-manager ${K8S_VERSION}, etcd ${ETCD_VERSION} ready in $bin" >&2
