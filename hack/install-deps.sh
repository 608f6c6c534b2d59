#!/usr/bin/env bash
# Installs the Debian packages Loam's tests and `loam up` need, when they are missing.
# Idempotent: a second run installs nothing. As root it installs; otherwise it prints the exact
# apt-get line and fails, so a missing dependency is never silently skipped.
set -euo pipefail

packages=(
  etcd-server etcd-client                       # storage conformance against a real etcd
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  xorriso busybox                               # cloud-init seed ISOs, initramfs for test boots
  iproute2 nftables dnsmasq-base wireguard-tools wireguard-go
  prometheus                                    # scrapes /metrics in e2e tests
  protobuf-compiler libprotobuf-dev             # proto/ code generation
  python3 make g++                              # better-sqlite3 builds from source
)

missing=()
for pkg in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

install_line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages; run as root: apt-get update && $install_line" >&2
  exit 1
fi

# Packaged daemons (etcd, prometheus, libvirtd) must not start on install: tests start their own
# on loopback ports. policy-rc.d is Debian's switch for that; remove ours afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$install_line
