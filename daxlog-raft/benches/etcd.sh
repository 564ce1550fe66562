#!/usr/bin/env bash
# A 3-node daxlog-raft cluster against a 3-member etcd cluster, all on 127.0.0.1, with the data
# of both on tmpfs (/dev/shm) and then on disk. For every storage location, value size and
# client count, examples/raft_load.rs drives each cluster's leader for DURATION seconds (closed
# loop: every client has its own keep-alive connection and one write in flight) and the script
# prints one table. Every cell starts from new, empty clusters. Run by hand:
#
#   bash daxlog-raft/benches/etcd.sh
#
# Environment:
#   DURATION=5         seconds measured per cell (after WARMUP=1 s of the same load)
#   SIZES="64 1024"    bytes per write (etcd: the value; the key adds 14 bytes)
#   CLIENTS="1 16"     concurrent clients
#   STORAGES="shm disk"
#   REPEAT=3           runs per cell, the two targets alternating; the table shows the run with
#                      the median writes/s of each target (the lower middle one if even)
#   TARGETS="daxlog-raft etcd"
#   RAFT_NODES=3       1 measures a one-node daxlog-raft cluster (no replication)
#   RAFT_ARGS=""       more arguments for every daxlog-raft-node (e.g. "--writes-in-flight 2")
#   SHM_DIR=/dev/shm   parent of the tmpfs data directories
#   DISK_DIR=<repo>/target   parent of the disk data directories (ext4 expected)
#   KEEP=1             keep the data directories and logs
#
# etcd runs with its default settings (it fsyncs its WAL before acknowledging a write); each
# daxlog-raft node runs with the node binary's defaults (its log is a daxlog file, made durable
# before an entry is acknowledged). etcd 3.4 (Debian's etcd-server) is installed with apt-get
# when `etcd` is missing.
set -euo pipefail

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SIZES=${SIZES:-"64 1024"}
CLIENTS=${CLIENTS:-"1 16"}
STORAGES=${STORAGES:-"shm disk"}
REPEAT=${REPEAT:-3}
TARGETS=${TARGETS:-"daxlog-raft etcd"}
RAFT_NODES=${RAFT_NODES:-3}
RAFT_ARGS=${RAFT_ARGS:-}
KEEP=${KEEP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHM_DIR=${SHM_DIR:-/dev/shm}
DISK_DIR=${DISK_DIR:-$ROOT/target}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

ETCD_CLIENT_PORTS=(23791 23792 23793)
ETCD_PEER_PORTS=(23801 23802 23803)
RAFT_PORTS=(27101 27102 27103)

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- everything started here is stopped on exit -------------------------------------------
PIDS=()
DIRS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    if [[ $KEEP != 1 ]]; then
        local d
        for d in "${DIRS[@]}"; do rm -rf -- "$d"; done
    else
        log "kept: ${DIRS[*]}"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# --- tools ---------------------------------------------------------------------------------
missing=()
has_target etcd && ! command -v etcd >/dev/null && missing+=(etcd-server etcd-client)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    log "installing with apt-get: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
    # The etcd package's own service is not wanted: the benchmark starts its own members.
    if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
        systemctl stop etcd || true
    fi
fi

log "building (release): daxlog-raft-node and examples/raft_load"
build=(cargo build --release -p daxlog-raft --example raft_load)
has_target daxlog-raft && build+=(--bin daxlog-raft-node)
(cd "$ROOT" && "${build[@]}") >&2
LOAD=$BIN/examples/raft_load
NODE=$BIN/daxlog-raft-node

CPU=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
NCPU=$(nproc)
ETCD_VERSION=$(has_target etcd && etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p' || true)

# --- clusters ------------------------------------------------------------------------------
start_etcd() { # parent
    local parent=$1 i cluster="" logdir=$1/logs
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:${ETCD_PEER_PORTS[i]}"
    done
    for i in 0 1 2; do
        local name=e$((i + 1)) cp=${ETCD_CLIENT_PORTS[i]} pp=${ETCD_PEER_PORTS[i]}
        etcd --name "$name" --data-dir "$parent/etcd$((i + 1))" \
            --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
            --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token daxlog-raft-bench \
            >"$logdir/etcd$((i + 1)).log" 2>&1 &
        PIDS+=($!)
    done
    local deadline=$((SECONDS + 30))
    for i in 0 1 2; do
        until curl -sf "http://127.0.0.1:${ETCD_CLIENT_PORTS[i]}/health" | grep -q '"health":"true"'; do
            ((SECONDS < deadline)) || die "etcd member $((i + 1)) not healthy (see $logdir)"
            sleep 0.2
        done
    done
}

raft_post() { # port path json
    local out code
    out=$(curl -s -w '\n%{http_code}' -X POST -H 'content-type: application/json' \
        --max-time 60 -d "$3" "http://127.0.0.1:$1$2") || die "POST $2 on :$1 failed"
    code=${out##*$'\n'}
    [[ $code == 200 ]] || die "POST $2 $3 on :$1: HTTP $code ${out%$'\n'*}"
}

start_raft() { # parent
    local parent=$1 i logdir=$1/logs n=$RAFT_NODES
    for ((i = 0; i < n; i++)); do
        local id=$((i + 1)) init=()
        ((id == 1)) && init=(--init)
        "$NODE" --id "$id" --listen "127.0.0.1:${RAFT_PORTS[i]}" --data-dir "$parent/raft$id" \
            "${init[@]}" $RAFT_ARGS >"$logdir/raft$id.out" 2>"$logdir/raft$id.log" &
        PIDS+=($!)
    done
    local deadline=$((SECONDS + 30))
    for ((i = 0; i < n; i++)); do
        until grep -q "^daxlog-raft-node $((i + 1)) listening on " "$logdir/raft$((i + 1)).out" 2>/dev/null; do
            ((SECONDS < deadline)) || die "daxlog-raft node $((i + 1)) printed no readiness line (see $logdir)"
            sleep 0.1
        done
    done
    until curl -sf "http://127.0.0.1:${RAFT_PORTS[0]}/metrics" | grep -q '"state":"Leader"'; do
        ((SECONDS < deadline)) || die "daxlog-raft node 1 did not become leader (see $logdir)"
        sleep 0.1
    done
    local voters=1
    for ((i = 1; i < n; i++)); do
        raft_post "${RAFT_PORTS[0]}" /admin/add-learner "{\"id\":$((i + 1)),\"addr\":\"127.0.0.1:${RAFT_PORTS[i]}\"}"
        voters+=",$((i + 1))"
    done
    ((n > 1)) && raft_post "${RAFT_PORTS[0]}" /admin/change-membership "{\"voters\":[$voters]}"
    return 0
}

endpoints() { # target
    local p out=""
    if [[ $1 == etcd ]]; then
        for p in "${ETCD_CLIENT_PORTS[@]}"; do out+="${out:+,}127.0.0.1:$p"; done
    else
        for ((p = 0; p < RAFT_NODES; p++)); do out+="${out:+,}127.0.0.1:${RAFT_PORTS[p]}"; done
    fi
    echo "$out"
}

# --- runs ----------------------------------------------------------------------------------
RESULTS=$(mktemp "${TMPDIR:-/tmp}/daxlog-raft-etcd.XXXXXX")
DIRS+=("$RESULTS")

# Every cell (size, clients) gets new clusters, so that no cell runs on what an earlier one left
# (etcd's keys and revisions, daxlog-raft's journal and snapshots); within a cell the targets
# alternate, REPEAT times.
run_storage() { # storage parent-of-parents
    local storage=$1 parent size clients rep target line
    log "$storage: data under $2 ($(df -T "$2" | awk 'NR == 2 { print $2 }'))"
    for size in $SIZES; do
        for clients in $CLIENTS; do
            parent=$(mktemp -d "$2/daxlog-raft-etcd-bench.XXXXXX")
            DIRS+=("$parent")
            mkdir -p "$parent/logs"
            has_target etcd && start_etcd "$parent"
            has_target daxlog-raft && start_raft "$parent"
            for ((rep = 0; rep < REPEAT; rep++)); do
                for target in $TARGETS; do
                    line=$("$LOAD" --target "$target" --endpoints "$(endpoints "$target")" \
                        --size "$size" --clients "$clients" --duration "$DURATION" \
                        --warmup "$WARMUP" --label "$storage") ||
                        die "load generator failed against $target ($storage, $size B, $clients clients)"
                    log "$line"
                    echo "$line" >>"$RESULTS"
                done
            done
            stop_all
            [[ $KEEP == 1 ]] || rm -rf -- "$parent"
        done
    done
}

for storage in $STORAGES; do
    case $storage in
    shm) run_storage shm "$SHM_DIR" ;;
    disk) run_storage disk "$DISK_DIR" ;;
    *) die "unknown storage $storage (shm or disk)" ;;
    esac
done

# --- table ---------------------------------------------------------------------------------
# One row per target and cell: the run with the median writes/s among the REPEAT runs; the
# daxlog-raft row carries the ratios daxlog-raft/etcd of writes/s and of p50 latency.
echo
echo "daxlog-raft ($RAFT_NODES nodes, HTTP/1.1 POST /append) vs etcd ${ETCD_VERSION:-} (3 members, gRPC KV.Put), 127.0.0.1"
echo "CPU: $CPU ($NCPU CPUs)   date: $(date -u '+%Y-%m-%d %H:%M UTC')   ${DURATION} s per cell, median of $REPEAT"
jq -rs --arg targets "$TARGETS" --arg storages "$STORAGES" '
    def median_run: sort_by(.writes_per_s) | .[(length - 1) / 2 | floor];
    ($targets | split(" ")) as $ts
    | ($storages | split(" ")) as $order
    | group_by([.label, .size, .clients])
    | sort_by([(.[0].label as $l | $order | index($l)), .[0].size, .[0].clients])[]
    | (map(select(.target == "daxlog-raft")) | if length > 0 then median_run else null end) as $r
    | (map(select(.target == "etcd")) | if length > 0 then median_run else null end) as $e
    | $ts[] as $t
    | (if $t == "etcd" then $e else $r end) as $x
    | select($x != null)
    | [$t, $x.label, $x.size, $x.clients, $x.writes_per_s, $x.p50_us, $x.p99_us,
       (if $t == "daxlog-raft" and $e != null then $r.writes_per_s / $e.writes_per_s else "" end),
       (if $t == "daxlog-raft" and $e != null then $r.p50_us / $e.p50_us else "" end)]
    | @tsv' "$RESULTS" |
    awk -F '\t' '
        BEGIN {
            printf "%-12s %-7s %5s %7s %9s %9s %9s %10s %6s\n", "target", "storage", "size",
                "clients", "writes/s", "p50 us", "p99 us", "x writes/s", "x p50"
        }
        {
            printf "%-12s %-7s %5s %7s %9.0f %9.0f %9.0f", $1, $2, $3, $4, $5, $6, $7
            if ($8 != "") printf " %10.2f %6.2f", $8, $9
            printf "\n"
        }'
errors=$(jq -s 'map(.errors) | add' "$RESULTS")
[[ $errors == 0 ]] || echo "failed requests (left out of the figures): $errors"
echo "x = daxlog-raft / etcd. etcd keys: 14 bytes each, unique per write; values of the given size."
