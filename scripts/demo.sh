#!/usr/bin/env bash
# Command 1 of the README: builds nbd-node, serves a 1 GiB sparse demo image with a little
# data in it on 127.0.0.1, shows it with qemu-img, nbdinfo and nbd-node's own client, then
# stops the server with SIGTERM (graceful: exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-peers.sh
source scripts/java-home.sh
[ -f nbd-node/target/nbd-node.jar ] || mvn -B -ntp -q -DskipTests package

port=${DEMO_PORT:-10809}
work=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

image="$work/demo.img"
truncate -s 1G "$image"
printf 'kube-nbd demo data' | dd of="$image" bs=1 seek=$((64 << 20)) conv=notrunc status=none

java -jar nbd-node/target/nbd-node.jar serve --bind 127.0.0.1 --port "$port" \
  --export "demo=$image,description=kube-nbd demo image" &
server_pid=$!
for _ in $(seq 1 100); do
  nbdinfo --size "nbd://127.0.0.1:$port/demo" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "nbd-node serve exited early" >&2; exit 1; }
  sleep 0.2
done

echo "== qemu-img info nbd://127.0.0.1:$port/demo"
qemu-img info "nbd://127.0.0.1:$port/demo"
echo "== nbdinfo --map nbd://127.0.0.1:$port/demo"
nbdinfo --map "nbd://127.0.0.1:$port/demo"
echo "== nbd-node list nbd://127.0.0.1:$port"
java -jar nbd-node/target/nbd-node.jar list "nbd://127.0.0.1:$port"

kill -TERM "$server_pid"
wait "$server_pid"
server_pid=
echo "== server stopped cleanly"
