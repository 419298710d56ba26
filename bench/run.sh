#!/usr/bin/env bash
# kube-nbd benchmark: nbd-node vs qemu-nbd vs nbdkit on one tmpfs image, over
# loopback, driven by fio (nbd engine) and nbdcopy. See bench/README.md.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
JAR="$REPO_ROOT/nbd-node/target/nbd-node.jar"
REPORT="$SCRIPT_DIR/report.py"

ALL_SERVERS="nbd-node,qemu-nbd,nbdkit"
RUNTIME=${BENCH_RUNTIME:-10}
RAMP=${BENCH_RAMP:-2}
SIZE=${BENCH_SIZE:-1G}
ONLY=${BENCH_ONLY:-$ALL_SERVERS}
COPY_REPS=${BENCH_COPY_REPS:-3}
COPY_WRITE=${BENCH_COPY_WRITE:-1}
PORT_BASE=${BENCH_PORT_BASE:-27000}
IDLE_SETTLE=${BENCH_IDLE_SETTLE:-2}
WARMUP=${BENCH_WARMUP:-3}
START_TIMEOUT=${BENCH_START_TIMEOUT:-20}
OUT_DIR=${BENCH_OUT_DIR:-$SCRIPT_DIR/out}
# The JVM flags README recommends for serving (small heap: data lives in direct buffers).
NBD_NODE_JAVA_OPTS="-XX:+UseSerialGC -Xms8m -Xmx256m -XX:MaxDirectMemorySize=1g"
JAVA_OPTS_EXTRA=${BENCH_JAVA_OPTS-$NBD_NODE_JAVA_OPTS}
NO_BUILD=0
TLS_COPY_REPS=${BENCH_TLS_COPY_REPS:-1}
TLS_MODE=${BENCH_TLS:-1}     # 0 = plain only, 1 = plain + TLS, only = TLS only
TLS_ON=0                     # set while the TLS section runs
PSK_USER=alice

usage() {
    cat <<EOF
Usage: bench/run.sh [options]

Serves one tmpfs image (random data) with nbd-node, qemu-nbd and nbdkit in turn
on 127.0.0.1 and measures each with fio (nbd engine) and nbdcopy.

Options:
  --runtime N     fio time per workload in seconds (default $RUNTIME; env BENCH_RUNTIME)
  --ramp N        fio ramp time in seconds (default $RAMP; env BENCH_RAMP)
  --size SIZE     image size, e.g. 256M, 1G, 2GiB (default $SIZE; env BENCH_SIZE)
  --only LIST     comma-separated subset of: $ALL_SERVERS (env BENCH_ONLY)
  --warmup N      untimed mixed 4k/1M load before the measurements, in seconds
                  (default $WARMUP; env BENCH_WARMUP; 0 = off). Same for every server;
                  it mainly lets the JVM JIT-compile the hot paths of nbd-node.
  --copy-reps N   nbdcopy repetitions per direction, median reported (default $COPY_REPS)
  --no-copy-write skip the nbdcopy file->server direction
  --no-build      do not build nbd-node/target/nbd-node.jar if it is missing
  --tls           also run the TLS-PSK section after the plain one (default; env BENCH_TLS=1)
  --no-tls        plain section only (env BENCH_TLS=0)
  --tls-only      TLS-PSK section only (env BENCH_TLS=only)
  --tls-copy-reps N  nbdcopy repetitions per TLS copy row (default $TLS_COPY_REPS)
  -h, --help      this text

Other env: BENCH_PORT_BASE (default 27000), BENCH_JAVA_OPTS (JVM flags for
nbd-node, default "$NBD_NODE_JAVA_OPTS"; set it empty for the JVM's defaults), BENCH_OUT_DIR (default bench/out), BENCH_START_TIMEOUT (20 s).
Results: table on stdout, saved as \$OUT_DIR/results-DATE.txt and .json.
EOF
}

die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

while (($#)); do
    case "$1" in
        --runtime) RUNTIME=${2:?--runtime needs a value}; shift 2 ;;
        --runtime=*) RUNTIME=${1#*=}; shift ;;
        --ramp) RAMP=${2:?--ramp needs a value}; shift 2 ;;
        --ramp=*) RAMP=${1#*=}; shift ;;
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --size=*) SIZE=${1#*=}; shift ;;
        --only) ONLY=${2:?--only needs a value}; shift 2 ;;
        --only=*) ONLY=${1#*=}; shift ;;
        --copy-reps) COPY_REPS=${2:?--copy-reps needs a value}; shift 2 ;;
        --copy-reps=*) COPY_REPS=${1#*=}; shift ;;
        --warmup) WARMUP=${2:?--warmup needs a value}; shift 2 ;;
        --warmup=*) WARMUP=${1#*=}; shift ;;
        --no-copy-write) COPY_WRITE=0; shift ;;
        --no-build) NO_BUILD=1; shift ;;
        --tls) TLS_MODE=1; shift ;;
        --no-tls) TLS_MODE=0; shift ;;
        --tls-only) TLS_MODE=only; shift ;;
        --tls-copy-reps) TLS_COPY_REPS=${2:?--tls-copy-reps needs a value}; shift 2 ;;
        --tls-copy-reps=*) TLS_COPY_REPS=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ $TLS_MODE == 0 || $TLS_MODE == 1 || $TLS_MODE == only ]] || die "BENCH_TLS must be 0, 1 or only"
[[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || die "--runtime must be a positive integer (seconds)"
[[ $RAMP =~ ^[0-9]+$ ]] || die "--ramp must be a non-negative integer (seconds)"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup must be a non-negative integer (seconds)"
[[ $COPY_REPS =~ ^[1-9][0-9]*$ && $COPY_REPS -le 20 ]] || die "--copy-reps must be 1..20"
[[ $TLS_COPY_REPS =~ ^[1-9][0-9]*$ && $TLS_COPY_REPS -le 20 ]] || die "--tls-copy-reps must be 1..20"
[[ $PORT_BASE =~ ^[0-9]+$ && $PORT_BASE -ge 1024 && $PORT_BASE -le 60000 ]] \
    || die "BENCH_PORT_BASE must be 1024..60000"

# --- size -> bytes ----------------------------------------------------------
s=${SIZE%iB}; s=${s%B}
SIZE_BYTES=$(numfmt --from=iec "$s" 2>/dev/null) || die "cannot parse --size '$SIZE'"
(( SIZE_BYTES >= 16777216 )) || die "--size must be at least 16M"
(( SIZE_BYTES % 1048576 == 0 )) || die "--size must be a multiple of 1M"
SIZE_HUMAN=$(numfmt --to=iec-i --suffix=B "$SIZE_BYTES")

# --- server selection -------------------------------------------------------
declare -a SERVERS=()
IFS=',' read -r -a _req <<<"$ONLY"
for want in nbd-node qemu-nbd nbdkit; do   # fixed order
    for r in "${_req[@]}"; do
        [[ $r == "$want" ]] && { SERVERS+=("$want"); break; }
    done
done
for r in "${_req[@]}"; do
    case "$r" in nbd-node|qemu-nbd|nbdkit|'') ;; *) die "unknown server in --only: $r" ;; esac
done
((${#SERVERS[@]})) || die "--only selects no server"

has_server() { local x; for x in "${SERVERS[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }

# --- tools ------------------------------------------------------------------
for t in fio nbdcopy nbdinfo python3 ss numfmt timeout; do
    command -v "$t" >/dev/null || die "required tool not found: $t"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "this fio has no nbd ioengine"
has_server qemu-nbd && ! command -v qemu-nbd >/dev/null && die "qemu-nbd not installed"
has_server nbdkit && ! command -v nbdkit >/dev/null && die "nbdkit not installed"
if [[ $TLS_MODE != 0 ]]; then
    command -v psktool >/dev/null || die "psktool (gnutls-bin) is needed for the TLS section (or use --no-tls)"
fi

java_major() {  # prints the java.specification.version major of $1/bin/java
    local v
    v=$("$1/bin/java" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java\.specification\.version = //p' | head -n1) || return 1
    v=${v#1.}; v=${v%%.*}
    [[ $v =~ ^[0-9]+$ ]] && echo "$v"
}

if has_server nbd-node; then
    jm=""
    if [[ -n ${JAVA_HOME:-} && -x ${JAVA_HOME}/bin/java ]]; then
        jm=$(java_major "$JAVA_HOME" || true)
    fi
    if [[ -z $jm || $jm -lt 22 ]]; then
        JAVA_HOME=/usr/lib/jvm/temurin-25-jdk-amd64
    fi
    export JAVA_HOME
    [[ -x $JAVA_HOME/bin/java ]] || die "no JDK >= 22 found (tried $JAVA_HOME)"
    if [[ ! -f $JAR ]]; then
        if ((NO_BUILD)); then
            die "$JAR is missing and --no-build was given"
        fi
        command -v mvn >/dev/null || die "$JAR is missing and mvn is not installed"
        log "building nbd-node ($JAR missing): mvn -B -q -DskipTests package"
        (cd "$REPO_ROOT" && mvn -B -q -DskipTests package) || die "maven build failed"
        [[ -f $JAR ]] || die "build finished but $JAR does not exist"
    fi
fi

# --- work dir & cleanup -----------------------------------------------------
WORK=$(mktemp -d /dev/shm/kube-nbd-bench.XXXXXX)
IMAGE="$WORK/image.raw"
SRC="$WORK/source.raw"
RESULTS="$WORK/results.tsv"
META="$WORK/meta.tsv"
: >"$RESULTS"; : >"$META"
SRV_PID=""
SAMPLER_PID=""
FAILED=0
PSK="$WORK/keys.psk"
SHIM=""            # LD_PRELOAD shim that lets fio's nbd engine read tls-psk-file
declare -a FIO_PRE=()

alive() {  # true if PID exists and is not a zombie
    local st
    [[ -n ${1:-} ]] || return 1
    st=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z ]]
}

stop_pid() {  # TERM, wait up to 5 s, then KILL; reaps if it is our child
    local pid=$1 i
    [[ -n $pid ]] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$SAMPLER_PID"
    stop_pid "$SRV_PID"
    [[ -n ${WORK:-} && $WORK == /dev/shm/kube-nbd-bench.* && -d $WORK ]] && rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }
result() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

fill_random() {  # fill_random FILE: SIZE_BYTES of incompressible non-zero data
    local f=$1
    if fio --name=fill --filename="$f" --rw=write --bs=1M --size="$SIZE_BYTES" \
           --ioengine=psync --refill_buffers=1 --output=/dev/null >/dev/null 2>&1 \
       && [[ $(stat -c %s "$f") -eq $SIZE_BYTES ]]; then
        return 0
    fi
    log "fio fill failed, falling back to /dev/urandom"
    head -c "$SIZE_BYTES" /dev/urandom >"$f"
}

pick_port() {
    local i p
    for ((i = 0; i < 500; i++)); do
        p=$((PORT_BASE + RANDOM % 2000))
        # no socket at all on it (listening, established or TIME_WAIT)
        if [[ -z $(ss -tanH "( sport = :$p or dport = :$p )" 2>/dev/null) ]]; then
            echo "$p"; return 0
        fi
    done
    return 1
}

rss_kib() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null || true; }
kib2mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
now_ns() { date +%s%N; }
CLK_TCK=$(getconf CLK_TCK)
cores_busy() {  # cores_busy TICKS0 TICKS1 NS0 NS1
    awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$CLK_TCK" \
        'BEGIN { d = (t1 - t0) / 1e9; if (d <= 0) d = 1; printf "%.2f", (b - a) / hz / d }'
}

# URI of the export; with TLS_ON an nbds:// URI with the PSK identity and key file
srv_uri() {
    if ((TLS_ON)); then
        echo "nbds://$PSK_USER@127.0.0.1:$1/bench?tls-psk-file=$PSK"
    else
        echo "nbd://127.0.0.1:$1/bench"
    fi
}

start_server() {  # start_server NAME PORT -> sets SRV_PID
    local name=$1 port=$2 logf="$WORK/$1$(((TLS_ON)) && echo .tls).log" tls=()
    if ((TLS_ON)); then
        case "$name" in
            nbd-node) tls=(--tls-psk "$PSK") ;;   # credentials given = TLS required
            qemu-nbd) tls=(--object "tls-creds-psk,id=tls0,endpoint=server,dir=$WORK" --tls-creds tls0) ;;
            nbdkit) tls=(--tls=require "--tls-psk=$PSK") ;;
        esac
    fi
    case "$name" in
        nbd-node)
            # shellcheck disable=SC2086
            "$JAVA_HOME/bin/java" $JAVA_OPTS_EXTRA -jar "$JAR" serve \
                --bind 127.0.0.1 --port "$port" "${tls[@]}" --export "bench=$IMAGE" >"$logf" 2>&1 &
            ;;
        qemu-nbd)
            qemu-nbd -t -f raw -x bench -b 127.0.0.1 -p "$port" -e 8 "${tls[@]}" "$IMAGE" >"$logf" 2>&1 &
            ;;
        nbdkit)
            nbdkit -f -i 127.0.0.1 -p "$port" -e bench "${tls[@]}" file "$IMAGE" >"$logf" 2>&1 &
            ;;
    esac
    SRV_PID=$!
}

wait_ready() {  # wait_ready NAME PORT: bounded wait for listen + NBD handshake
    local name=$1 port=$2 deadline=$((SECONDS + START_TIMEOUT)) got rc
    ((TLS_ON)) && name="$name.tls"
    while ((SECONDS < deadline)); do
        if ! alive "$SRV_PID"; then
            wait "$SRV_PID" 2>/dev/null && rc=0 || rc=$?
            log "$name exited (status $rc) before accepting connections; last log lines:"
            if [[ -s $WORK/$name.log ]]; then
                tail -n 20 "$WORK/$name.log" | sed 's/^/    /' >&2
            else
                log "    (the server printed nothing)"
            fi
            return 1
        fi
        if [[ -n $(ss -ltnH "( sport = :$port )" 2>/dev/null) ]]; then
            if got=$(timeout 10 nbdinfo --size "$(srv_uri "$port")" 2>>"$WORK/$name.nbdinfo.err"); then
                if [[ $got != "$SIZE_BYTES" ]]; then
                    log "$name reports export size $got, expected $SIZE_BYTES"
                    return 1
                fi
                return 0
            fi
        fi
        sleep 0.2
    done
    log "$name did not become ready on 127.0.0.1:$port within ${START_TIMEOUT}s; last log lines:"
    tail -n 20 "$WORK/$name.log" | sed 's/^/    /' >&2
    [[ -s $WORK/$name.nbdinfo.err ]] && tail -n 5 "$WORK/$name.nbdinfo.err" | sed 's/^/    nbdinfo: /' >&2
    return 1
}

start_sampler() {  # max VmRSS of SRV_PID every 0.5 s into FILE, bounded
    local file=$1 max_iter=$2
    (
        max=0
        for ((i = 0; i < max_iter; i++)); do
            v=$(rss_kib "$SRV_PID" VmRSS)
            [[ -z $v ]] && break
            ((v > max)) && max=$v
            echo "$max" >"$file.tmp" && mv -f "$file.tmp" "$file"
            sleep 0.5
        done
    ) &
    SAMPLER_PID=$!
}

# run_fio NAME PORT ID RW BS QD [sample]
run_fio() {
    local name=$1 port=$2 id=$3 rw=$4 bs=$5 qd=$6 sample=${7:-}
    local out="$WORK/fio-$name-$id.json" extra=() t0 t1 c0 c1 parsed
    [[ $rw == rand* ]] && extra+=(--norandommap --randrepeat=0)
    log "  $name: fio $id ($rw bs=$bs iodepth=$qd, ${RUNTIME}s)"
    [[ -n $sample ]] && start_sampler "$WORK/rss-$name" $(((RUNTIME + RAMP + 10) * 2))
    c0=$(cpu_ticks "$SRV_PID"); t0=$(now_ns)
    if ! timeout -k 5 $((RUNTIME + RAMP + 60)) "${FIO_PRE[@]}" fio --name="$id" --ioengine=nbd \
            --uri="$(srv_uri "$port")" --rw="$rw" --bs="$bs" --iodepth="$qd" \
            --numjobs=1 --size="$SIZE_BYTES" --time_based --runtime="$RUNTIME" \
            --ramp_time="$RAMP" "${extra[@]}" --output-format=json --output="$out" \
            >"$WORK/fio-$name-$id.stderr" 2>&1; then
        log "  $name: fio $id failed:"; sed 's/^/    /' "$WORK/fio-$name-$id.stderr" >&2
        [[ -n $sample ]] && { stop_pid "$SAMPLER_PID"; SAMPLER_PID=""; }
        return 1
    fi
    t1=$(now_ns); c1=$(cpu_ticks "$SRV_PID")
    if [[ -n $sample ]]; then
        stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
        [[ -s $WORK/rss-$name ]] && result "$name" rss rss_load "$(kib2mib "$(cat "$WORK/rss-$name")")"
    fi
    parsed=$(python3 "$REPORT" fio "$out" "$rw") || { log "  $name: cannot parse $out"; return 1; }
    read -r iops mib lat p99 <<<"$parsed"
    if [[ $bs == 4k ]]; then result "$name" "$id" value "$iops"; else result "$name" "$id" value "$mib"; fi
    result "$name" "$id" lat_us "$lat"
    result "$name" "$id" p99_us "$p99"
    result "$name" "$id" cpu "$(cores_busy "$c0" "$c1" "$t0" "$t1")"
    log "    -> ${iops} IOPS, ${mib} MiB/s, clat mean ${lat} us"
}

# run_copy NAME PORT ID SRC DST [CONNECTIONS]
run_copy() {
    local name=$1 port=$2 id=$3 src=$4 dst=$5 conns=${6:-4} r t0 t1 c0 c1 mibs
    local limit=$((60 + SIZE_BYTES / 20971520))   # generous: >= 20 MiB/s
    for ((r = 1; r <= COPY_REPS; r++)); do
        c0=$(cpu_ticks "$SRV_PID"); t0=$(now_ns)
        if ! timeout -k 5 "$limit" nbdcopy --connections="$conns" "$src" "$dst" >"$WORK/copy-$name-$id.log" 2>&1; then
            log "  $name: nbdcopy $id failed:"; sed 's/^/    /' "$WORK/copy-$name-$id.log" >&2
            return 1
        fi
        t1=$(now_ns); c1=$(cpu_ticks "$SRV_PID")
        mibs=$(awk -v b="$SIZE_BYTES" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", b / 1048576 / ((t1 - t0) / 1e9) }')
        result "$name" "$id" value "$mibs"
        result "$name" "$id" cpu "$(cores_busy "$c0" "$c1" "$t0" "$t1")"
        log "  $name: nbdcopy $id rep $r: $mibs MiB/s"
    done
}

server_version() {
    case "$1" in
        nbd-node)
            local rev jv
            rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
            git -C "$REPO_ROOT" diff --quiet HEAD -- 2>/dev/null || rev="$rev+dirty"
            jv=$("$JAVA_HOME/bin/java" -version 2>&1 | head -n1)
            echo "git $rev, $(basename "$JAR") $(date -r "$JAR" '+%F %T'), $jv, JVM flags: ${JAVA_OPTS_EXTRA:-(defaults)}"
            ;;
        qemu-nbd) qemu-nbd --version | head -n1 ;;
        nbdkit) echo "$(nbdkit --version | head -n1) (file plugin)" ;;
    esac
}

run_leg() {  # run_leg NAME: all workloads against one server
    local name=$1 port kib
    port=$(pick_port) || { log "no free port found"; return 1; }
    log "== $name on 127.0.0.1:$port"
    start_server "$name" "$port"
    wait_ready "$name" "$port" || return 1
    if timeout 10 nbdinfo --json "nbd://127.0.0.1:$port/bench" >"$WORK/$name.info.json" 2>/dev/null; then
        meta "multiconn.$name" "$(python3 -c 'import json,sys; print("yes" if json.load(open(sys.argv[1]))["exports"][0].get("can_multi_conn") else "no")' "$WORK/$name.info.json" 2>/dev/null || echo "?")"
    fi
    sleep "$IDLE_SETTLE"
    kib=$(rss_kib "$SRV_PID" VmRSS); result "$name" rss rss_idle "$(kib2mib "$kib")"
    if ((WARMUP > 0)); then
        log "  $name: warm-up ${WARMUP}s (untimed)"
        timeout -k 5 $((WARMUP + 60)) fio --ioengine=nbd --uri="nbd://127.0.0.1:$port/bench" \
            --size="$SIZE_BYTES" --time_based --runtime="$WARMUP" --numjobs=1 \
            --name=warm4k --rw=randrw --bs=4k --iodepth=16 --norandommap \
            --name=warm1m --rw=rw --bs=1M --iodepth=4 \
            --output="$WORK/warmup-$name.txt" >/dev/null 2>&1 \
            || { log "  $name: warm-up failed:"; tail -n 20 "$WORK/warmup-$name.txt" | sed 's/^/    /' >&2; return 1; }
    fi

    run_fio "$name" "$port" rr4k_qd1 randread 4k 1 || return 1
    run_fio "$name" "$port" rr4k_qd32 randread 4k 32 sample || return 1
    run_fio "$name" "$port" rw4k_qd32 randwrite 4k 32 || return 1
    run_fio "$name" "$port" sr1m_qd8 read 1M 8 || return 1
    run_fio "$name" "$port" sw1m_qd8 write 1M 8 || return 1
    run_copy "$name" "$port" copy_read "nbd://127.0.0.1:$port/bench" null: || return 1
    if ((COPY_WRITE)); then
        run_copy "$name" "$port" copy_write "$SRC" "nbd://127.0.0.1:$port/bench" || return 1
    fi
    alive "$SRV_PID" || { log "$name died during the run"; return 1; }
    kib=$(rss_kib "$SRV_PID" VmHWM); result "$name" rss rss_hwm "$(kib2mib "$kib")"
    return 0
}

# Build the fio shim: fio's nbd engine calls nbd_connect_uri() without
# nbd_set_uri_allow_local_file(), so libnbd refuses "tls-psk-file=" in the URI.
# This LD_PRELOAD library wraps nbd_connect_uri() to allow it first. Only fio
# gets it. Needs a C compiler; without one the TLS fio rows are skipped.
build_shim() {
    local cc
    cc=$(command -v cc || command -v gcc || true)
    [[ -n $cc ]] || { log "no C compiler: TLS fio rows skipped (nbdcopy rows still run)"; return 1; }
    cat >"$WORK/fio-tls-shim.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
struct nbd_handle;
int nbd_connect_uri(struct nbd_handle *h, const char *uri)
{
    int (*real)(struct nbd_handle *, const char *) =
        (int (*)(struct nbd_handle *, const char *))dlsym(RTLD_NEXT, "nbd_connect_uri");
    int (*allow)(struct nbd_handle *, bool) =
        (int (*)(struct nbd_handle *, bool))dlsym(RTLD_DEFAULT, "nbd_set_uri_allow_local_file");
    if (!real || !allow || allow(h, true) == -1)
        return -1;
    return real(h, uri);
}
EOF
    "$cc" -O2 -shared -fPIC -o "$WORK/fio-tls-shim.so" "$WORK/fio-tls-shim.c" -ldl \
        >"$WORK/fio-tls-shim.log" 2>&1 \
        || { log "cannot build the fio TLS shim: TLS fio rows skipped"; sed 's/^/    /' "$WORK/fio-tls-shim.log" >&2; return 1; }
    SHIM="$WORK/fio-tls-shim.so"
}

tls_observe() {  # tls_observe NAME PORT: record the negotiated TLS parameters (client view)
    local name=$1 port=$2 dbg ver suite group kx line
    dbg=$(GNUTLS_DEBUG_LEVEL=4 LIBNBD_DEBUG=1 timeout 10 nbdinfo --size "$(srv_uri "$port")" 2>&1) || true
    suite=$(sed -n 's/.*Selected cipher suite: GNUTLS_\([A-Z0-9_]*\).*/TLS_\1/p' <<<"$dbg" | head -n1)
    group=$(sed -n 's/.*Selected group \([A-Z0-9_]*\).*/\1/p' <<<"$dbg" | head -n1)
    kx=$(sed -n 's/.*connection is using TLS: .* key exchange \([A-Z0-9_-]*\).*/\1/p' <<<"$dbg" | head -n1)
    if grep -q 'TLS 1.3 re-key' <<<"$dbg"; then ver="TLS 1.3"; else ver="TLS <1.3"; fi
    meta "tls_cipher.$name" "$ver ${suite:-?}, kx ${kx:-?}${group:+ $group}"
    if [[ $name == nbd-node ]]; then
        line=$(grep -o 'TLS established: .*' "$WORK/$name.tls.log" 2>/dev/null | head -n1 || true)
        [[ -n $line ]] && meta "tls_serverlog.$name" "$line"
    fi
    # the server must refuse plain NBD
    if timeout 10 nbdinfo --size "nbd://127.0.0.1:$port/bench" >/dev/null 2>&1; then
        meta "tls_required.$name" "NO (plain handshake accepted)"
    else
        meta "tls_required.$name" "yes"
    fi
}

run_tls_leg() {  # run_tls_leg NAME: TLS-PSK workloads against one server
    local name=$1 port kib
    local COPY_REPS=$TLS_COPY_REPS   # dynamic scope: run_copy sees the TLS repetition count
    port=$(pick_port) || { log "no free port found"; return 1; }
    log "== $name on 127.0.0.1:$port with TLS-PSK"
    start_server "$name" "$port"
    wait_ready "$name" "$port" || return 1
    tls_observe "$name" "$port"
    log "  $name: $(awk -F'\t' -v k="tls_cipher.$name" '$1 == k { v = $2 } END { print v }' "$META")"
    if [[ -n $SHIM ]]; then
        if ((WARMUP > 0)); then
            log "  $name: warm-up ${WARMUP}s (untimed, TLS)"
            timeout -k 5 $((WARMUP + 60)) "${FIO_PRE[@]}" fio --ioengine=nbd --uri="$(srv_uri "$port")" \
                --size="$SIZE_BYTES" --time_based --runtime="$WARMUP" --numjobs=1 \
                --name=warm4k --rw=randrw --bs=4k --iodepth=16 --norandommap \
                --name=warm1m --rw=rw --bs=1M --iodepth=4 \
                --output="$WORK/warmup-$name.tls.txt" >/dev/null 2>&1 \
                || { log "  $name: TLS warm-up failed:"; tail -n 20 "$WORK/warmup-$name.tls.txt" | sed 's/^/    /' >&2; return 1; }
        fi
        run_fio "$name" "$port" tls_rr4k_qd32 randread 4k 32 || return 1
        run_fio "$name" "$port" tls_sr1m_qd8 read 1M 8 || return 1
    fi
    run_copy "$name" "$port" tls_copy_read1 "$(srv_uri "$port")" null: 1 || return 1
    run_copy "$name" "$port" tls_copy_read "$(srv_uri "$port")" null: 4 || return 1
    if ((COPY_WRITE)); then
        run_copy "$name" "$port" tls_copy_write "$SRC" "$(srv_uri "$port")" 4 || return 1
    fi
    alive "$SRV_PID" || { log "$name died during the TLS run"; return 1; }
    kib=$(rss_kib "$SRV_PID" VmHWM); result "$name" tls_rss rss_hwm "$(kib2mib "$kib")"
    return 0
}

# --- main -------------------------------------------------------------------
DATE=$(date +%Y%m%d-%H%M%S)
meta date "$(date '+%F %T %Z')"
meta cpu_model "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
meta cores "$(nproc)"
meta kernel "$(uname -r)"
meta loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"
meta runtime "$RUNTIME"; meta ramp "$RAMP"; meta warmup "$WARMUP"; meta copy_reps "$COPY_REPS"
meta size_bytes "$SIZE_BYTES"; meta size_human "$SIZE_HUMAN"
meta servers "$(IFS=,; echo "${SERVERS[*]}")"
meta fio_version "$(fio --version)"
meta nbdcopy_version "$(nbdcopy --version | head -n1)"

if awk -v c="$(nproc)" '{ exit !($1 > c / 4) }' /proc/loadavg; then
    log "warning: load average is $(cut -d' ' -f1 /proc/loadavg) before the run; other work on this machine will skew the numbers"
fi
log "creating $SIZE_HUMAN random image in $WORK"
fill_random "$IMAGE"
((COPY_WRITE)) && fill_random "$SRC"

meta tls_mode "$TLS_MODE"
for name in "${SERVERS[@]}"; do
    meta "version.$name" "$(server_version "$name" 2>/dev/null || echo '?')"
done
for name in "${SERVERS[@]}"; do
    [[ $TLS_MODE == only ]] && break
    if run_leg "$name"; then
        meta "status.$name" ok
    else
        meta "status.$name" FAILED
        FAILED=1
        log "== $name FAILED; its column will show '-' (see messages above)"
        # drop partial numbers so a failed leg never looks like a result
        awk -F'\t' -v n="$name" '!($1 == n && $2 !~ /^tls_/)' "$RESULTS" >"$RESULTS.tmp" && mv -f "$RESULTS.tmp" "$RESULTS"
    fi
    stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
    stop_pid "$SRV_PID"; SRV_PID=""
done

if [[ $TLS_MODE != 0 ]]; then
    TLS_ON=1
    psktool -u "$PSK_USER" -p "$PSK" >/dev/null 2>&1 || die "psktool failed to create $PSK"
    if build_shim; then FIO_PRE=(env "LD_PRELOAD=$SHIM"); meta tls_fio yes; else meta tls_fio no; fi
    meta tls_loadavg "$(cut -d' ' -f1-3 /proc/loadavg)"; meta tls_copy_reps "$TLS_COPY_REPS"
    for name in "${SERVERS[@]}"; do
        if run_tls_leg "$name"; then
            meta "tls_status.$name" ok
        else
            meta "tls_status.$name" FAILED
            FAILED=1
            log "== $name TLS FAILED; its TLS column will show '-' (see messages above)"
            awk -F'\t' -v n="$name" '!($1 == n && $2 ~ /^tls_/)' "$RESULTS" >"$RESULTS.tmp" && mv -f "$RESULTS.tmp" "$RESULTS"
        fi
        stop_pid "$SRV_PID"; SRV_PID=""
    done
    FIO_PRE=(); TLS_ON=0
fi

mkdir -p "$OUT_DIR"
python3 "$REPORT" report "$META" "$RESULTS" "$OUT_DIR/results-$DATE.txt" "$OUT_DIR/results-$DATE.json"
log "saved $OUT_DIR/results-$DATE.txt and .json"
exit "$FAILED"
