#!/usr/bin/env bash
# Command 2 of the README: installs the real NBD peers the tests need (Debian packages,
# idempotent), builds the Kubernetes test binaries once (kube-apiserver, etcd,
# kube-controller-manager, csi-sanity, csi-attacher and helm from the Go module proxy, cached in ~/.cache/kube-nbd/bin) and runs
# every test: unit tests, then integration tests against the packaged nbd-node.jar, qemu-nbd
# 10, nbdkit, libnbd tools and fio, the CSI node plugin with csi-sanity, FUSE and loop devices,
# the operator against the real API server, and its CSI controller with the csi-attacher sidecar.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-peers.sh
bash scripts/k8s-test-binaries.sh kube-apiserver kube-controller-manager etcd csi-sanity csi-attacher helm
source scripts/java-home.sh
mvn -B -ntp verify "$@"
# Bounded fuzzing on top of the seeds verify ran: 30 s per target (@FuzzTest maxDuration), one JVM each.
for target in OptionDecoderFuzzTest RequestDecoderFuzzTest 'ReplyReaderFuzzTest#replies' 'ReplyReaderFuzzTest#optionReplies'; do
  JAZZER_FUZZ=1 mvn -B -ntp -pl nbd-node surefire:test -Dtest="$target" -Dsurefire.failIfNoSpecifiedTests=false
done
