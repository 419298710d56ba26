#!/usr/bin/env bash
# Operator scale benchmark (not a test): N NbdExports (default 1000), each over its own PVC with a
# consumer PV, against a real kube-apiserver + etcd + kube-controller-manager on loopback, with
# the packaged operator as its own process. Prints the time until all have dependents and
# status, create->status latency p50/p99/max, the operator's reconcile timer, heap and RSS.
#
#   bash bench/operator-scale.sh [COUNT] [OPERATOR_JVM_OPTIONS]
#   bash bench/operator-scale.sh 1000 "-XX:+UseSerialGC -Xmx256m"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/k8s-test-binaries.sh kube-apiserver kube-controller-manager etcd >/dev/null
source scripts/java-home.sh
mvn -B -q -ntp -DskipTests package
cd operator
mvn -B -q -ntp dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile=target/bench.classpath >/dev/null
mkdir -p ../bench/out
"$JAVA_HOME/bin/java" -cp "target/test-classes:target/classes:$(cat target/bench.classpath)" \
    io.kubenbd.operator.testing.ScaleBenchmark "${1:-1000}" "${2:--XX:+UseSerialGC -Xmx256m}" \
    2> ../bench/out/operator-scale.stderr | tee ../bench/out/operator-scale.txt
