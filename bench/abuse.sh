#!/usr/bin/env bash
# The flood of nbd-node's AbuseIT, against nbd-node and qemu-nbd (and nbdkit) side by side:
# 100 clients sending options and 100 pipelining reads (80 of 32 MiB, 20 of 4 KiB), none
# reading, while one client times 4 KiB reads. Prints the server's peak RSS and the good
# client's latency per server. The flood stops early once a server passes 3 GiB resident
# (ABUSE_RSS_CAP_MIB): the machine is shared. Not part of mvn verify. See bench/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
JAR="$REPO_ROOT/nbd-node/target/nbd-node.jar"
SECONDS_FLOOD=${ABUSE_SECONDS:-20}
SERVERS=${ABUSE_SERVERS:-nbd-node,qemu-nbd,nbdkit}
# What the operator gives server pods (operator ServerSettings.DEFAULT_JAVA_OPTIONS).
NBD_NODE_JAVA_OPTS="-XX:+UseSerialGC -Xms8m -Xmx256m -XX:MaxDirectMemorySize=1g"

[[ -f $JAR ]] || { echo "abuse: build first: mvn -pl nbd-node package -DskipTests" >&2; exit 1; }
JAVA="${JAVA_HOME:-/usr}/bin/java"
WORK=$(mktemp -d /dev/shm/kube-nbd-abuse.XXXXXX)
SRV_PID=""
cleanup() {
    if [[ -n $SRV_PID ]] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null || true
        wait "$SRV_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
truncate -s 1G "$WORK/disk.img"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_listening() {  # bounded: 30 s
    local port=$1 i
    for ((i = 0; i < 300; i++)); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null; then
            return 0
        fi
        kill -0 "$SRV_PID" 2>/dev/null || { echo "abuse: server exited; log:" >&2; cat "$WORK/server.log" >&2; return 1; }
        sleep 0.1
    done
    echo "abuse: server did not listen on $port within 30 s" >&2
    return 1
}

for server in ${SERVERS//,/ }; do
    port=$(free_port)
    case $server in
        nbd-node)
            # shellcheck disable=SC2086
            "$JAVA" $NBD_NODE_JAVA_OPTS -jar "$JAR" serve --bind 127.0.0.1 --port "$port" \
                --export "disk=$WORK/disk.img,max-connections=128" >"$WORK/server.log" 2>&1 &
            ;;
        qemu-nbd)
            (exec qemu-nbd -t -f raw -x disk -b 127.0.0.1 -p "$port" -e 128 "$WORK/disk.img" >"$WORK/server.log" 2>&1) &
            ;;
        nbdkit)
            (exec nbdkit -f -i 127.0.0.1 -p "$port" -e disk file "$WORK/disk.img" >"$WORK/server.log" 2>&1) &
            ;;
        *) echo "abuse: unknown server $server" >&2; exit 2 ;;
    esac
    SRV_PID=$!
    wait_listening "$port"
    sleep 1
    printf '%-9s ' "$server"
    python3 "$SCRIPT_DIR/abuse-flood.py" "$port" disk "$SRV_PID" "$SECONDS_FLOOD" || echo "flood failed"
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
done
