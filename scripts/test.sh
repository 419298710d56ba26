#!/usr/bin/env bash
# Command 2 of the README: installs the real NBD peers the tests need (Debian packages,
# idempotent) and runs every test: unit tests, then integration tests against the packaged
# nbd-node.jar, qemu-nbd 10, nbdkit, libnbd tools and fio.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-peers.sh
source scripts/java-home.sh
mvn -B -ntp verify "$@"
