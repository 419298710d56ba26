#!/usr/bin/env bash
# Installs the real NBD peers the tests judge against (see ../shared/PEERS.md).
# Idempotent: does nothing when every tool is already present.
set -euo pipefail

need=()
for tool in qemu-img qemu-io qemu-nbd nbdkit nbd-server nbdinfo nbdcopy nbdsh fio psktool certtool openssl \
    fusermount3 losetup blkid mkfs.ext4 debugfs mkfs.xfs e2fsck taskset; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# qemu 10 is required for extended headers; an older qemu-nbd from bookworm is not enough.
if command -v qemu-nbd >/dev/null 2>&1; then
  qemu_major=$(qemu-nbd --version | sed -n 's/^qemu-nbd \([0-9]*\)\..*/\1/p' | head -n1)
  [ "${qemu_major:-0}" -ge 10 ] || need+=(qemu-10)
fi
python3 -c 'import nbd' >/dev/null 2>&1 || /usr/bin/python3 -c 'import nbd' >/dev/null 2>&1 || need+=(python3-libnbd)
# The CSI plugin's userspace attach path loads libfuse3 through FFM.
[ -e /lib/x86_64-linux-gnu/libfuse3.so.3 ] || need+=(libfuse3-3)
[ ${#need[@]} -eq 0 ] && exit 0

echo "install-peers: missing ${need[*]}; installing from Debian"
export DEBIAN_FRONTEND=noninteractive
src=/etc/apt/sources.list.d/backports.sources
if [ ! -f "$src" ]; then
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  cat > "$src" <<SRC
Types: deb
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
apt-get install -y -qq -t bookworm-backports qemu-utils >/dev/null
apt-get install -y -qq nbdkit nbd-server nbd-client libnbd-bin python3-libnbd fio gnutls-bin openssl >/dev/null
# The CSI node plugin: FUSE 3, loop devices, ext4 and xfs tools.
apt-get install -y -qq fuse3 libfuse3-3 util-linux e2fsprogs xfsprogs >/dev/null
echo "install-peers: $(qemu-nbd --version | head -n1), $(nbdkit --version), $(nbdinfo --version | head -n1)"
