#!/usr/bin/env bash
# Command 1 of the README: a local development cluster on this machine. Builds everything,
# starts a real kube-apiserver, etcd and kube-controller-manager (built once from the Go module
# proxy into ~/.cache/kube-nbd), installs the CRDs, runs the operator, applies
# examples/nbdexport.yaml over a sparse 1 GiB image, runs its server pod locally (there is no
# kubelet) and prints the nbds:// endpoint, the PSK file and the nbdinfo / qemu-img commands
# that read it. Ctrl-C stops everything it started.
#
#   bash scripts/dev-cluster.sh           run until Ctrl-C
#   bash scripts/dev-cluster.sh --check   read the export once with nbdinfo, then stop (exit 0 on success)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-peers.sh
bash scripts/k8s-test-binaries.sh kube-apiserver kube-controller-manager etcd >/dev/null
source scripts/java-home.sh
mvn -B -q -ntp -DskipTests package
(cd operator && mvn -B -q -ntp dependency:build-classpath -Dmdep.includeScope=test \
    -Dmdep.outputFile=target/dev-cluster.classpath >/dev/null)
cd operator
exec "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED \
    -cp "target/test-classes:target/classes:$(cat target/dev-cluster.classpath)" \
    io.kubenbd.operator.testing.DevCluster "$@"
