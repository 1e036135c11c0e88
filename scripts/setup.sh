#!/usr/bin/env bash
# Set up asupermachine on Debian with KVM: system packages, a virtualenv with the
# project installed, and the guest assets (kernel, initramfs) and passt built into
# the user cache. Idempotent: each step is skipped when already done; assets are
# cached by content hash, so only the first run builds the kernel (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev cpio xz-utils patch
  musl-tools busybox-static erofs-utils qemu-system-x86 python3 python3-venv python3-dev
  docker-registry skopeo umoci buildah debootstrap apache2-utils passt tmux device-tree-compiler
  # arm64 guests: the cross compiler for their kernel, musl for their init and agent, QEMU's arm64 board
  gcc-aarch64-linux-gnu musl-dev:arm64 qemu-system-arm
)
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
# Debian's arm64 packages (its arm64 kernel, which the arm64 loader's tests read, and arm64 musl) are
# listed once dpkg takes the architecture.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo_cmd[@]}" dpkg --add-architecture arm64
  "${sudo_cmd[@]}" apt-get update -qq
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# Reinstall only when the packaging or the compiled bindings change.
stamp=.venv/.asupermachine-installed
wanted=$(cat pyproject.toml setup.py asupermachine/_core/kvm/_build.py asupermachine/_core/native/_build.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c "import asupermachine._core.kvm, asupermachine._core.native" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  echo "$wanted" > "$stamp"
fi

.venv/bin/python -m asupermachine.guest
# Debian 12's passt resets a guest's TCP connection idle for 24 s: build a fixed one (cached; the
# packaged passt stays as the fallback).
.venv/bin/python -m asupermachine._core.net
