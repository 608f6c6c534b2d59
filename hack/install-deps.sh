#!/usr/bin/env bash
# Installs the Debian packages Loam's tests and `loam up` need, when they are missing.
# Idempotent: a second run installs nothing. As root it installs; otherwise it prints the exact
# apt-get line and fails, so a missing dependency is never silently skipped.
set -euo pipefail

packages=(
  etcd-server etcd-client                       # storage conformance against a real etcd
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 qemu-utils
  libvirt-daemon-system                         # qemu:///system: the libvirt-qemu user, qemu.conf
  xorriso busybox                               # cloud-init seed ISOs, initramfs for test boots
  linux-image-cloud-amd64 cpio                  # the kernel and initramfs of the real-boot e2e guest
  syslinux syslinux-common mtools dosfstools    # the same guest as a bootable FAT disk image (no mounts)
  iproute2 nftables dnsmasq-base wireguard-tools wireguard-go
  prometheus                                    # scrapes /metrics in e2e tests
  protobuf-compiler libprotobuf-dev             # proto/ code generation
  python3 make g++                              # better-sqlite3 builds from source
)

# libvirt-daemon-system brings libvirt's "default" NAT network (libvirt-daemon-config-network),
# autostarted with libvirtd: a virbr0 bridge on 192.168.122.0/24 with dnsmasq and iptables rules.
# Loam makes its own bridges, and tests touch no addresses but loopback and their own namespaces,
# so it must not autostart (it stays defined: `virsh net-start default` still works).
default_network=/etc/libvirt/qemu/networks/autostart/default.xml
setup() {
  if [ -L "$default_network" ] || [ -e "$default_network" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "install-deps: run as root: rm $default_network" >&2
      exit 1
    fi
    rm -f "$default_network"
    echo "install-deps: libvirt's default network no longer autostarts"
  fi
}

missing=()
for pkg in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  setup
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
# The kernels installed here only boot test guests (with their own initramfs), never this host:
# INITRD=No makes the kernel's postinst hook skip update-initramfs, minutes on 2 cores.
export INITRD=No
apt-get update -qq
$install_line
setup
