#!/usr/bin/env bash
# power-cut.sh -- crash the whole (virtual) machine while daxlog appends on a DAX
# file system, then boot again and check that no acknowledged entry was lost.
#
# usage: tests/dax-vm/power-cut.sh
#
# For each file system in DAXLOG_POWER_CUT_FS, with one pmem image (a qemu RAM
# backing file) that is kept across rounds, and for each kill time K in
# DAXLOG_POWER_CUT_KILL_TIMES (a file system named NAME-nodax is NAME mounted
# with -o dax=never: /dev/pmem0 is then an ordinary block device under the
# guest's page cache, MAP_SYNC is refused and daxlog takes its msync path,
# with DAXLOG_POWER_CUT_NODAX_THREADS appenders at once so that its group
# commit is what the power cut interrupts):
#   1. boot a VM on the image and run `power_cut write /mnt/pmem/log.dax`
#      (examples/power_cut.rs): it opens the log (creating it the first time)
#      and appends entries forever, printing `ack <lsn>` after each append
#      returned (= the entry is durable). K seconds after it printed `ready`,
#      qemu is SIGKILLed (run-in-dax-vm.sh --backing IMG --kill-after K --kill-arm ^ready);
#   2. take the last complete `ack N` line the host received;
#   3. boot again on the same image (file system journal recovery, then
#      daxlog recovery) and run `power_cut check /mnt/pmem/log.dax N`: LSNs
#      1..last without gaps, every payload as written, last >= N.
# Round 2 thus appends to the log recovered in round 1, and so on.
#
# What this proves: the log survives a crash of the whole machine at an
# arbitrary point between appends (and the file system's metadata that daxlog
# relies on -- file creation, size, extents -- was made durable: the guest's
# page cache is lost at the kill). What it does NOT prove: that daxlog flushes
# the right cache lines. qemu's guest RAM, and so the emulated pmem, lives in
# the host's page cache (the backing file), so every store the guest CPU
# executed survives the kill, flushed or not. Lost cache lines are what the
# pmem simulator (pmem-sim) tests.
#
# environment:
#   DAXLOG_SKIP_DAX_VM=1          skip (print that, exit 0)
#   DAXLOG_POWER_CUT_FS           file systems (default: "ext4 xfs ext4-nodax
#                                 ext4-nodax-prefill"; NAME-nodax-prefill is NAME-nodax
#                                 with the log created by Options::prefill, every block
#                                 written once, and runs the first kill time only)
#   DAXLOG_POWER_CUT_NODAX_THREADS  appenders in the -nodax rounds (default: 4)
#   DAXLOG_POWER_CUT_PREFILL_THREADS  appenders in the -nodax-prefill round (default: 32,
#                                 more than the 16 appends that can be in flight, so that
#                                 appends are combined where syncs are slow: its result
#                                 line says how many were)
#   DAXLOG_POWER_CUT_KILL_TIMES   seconds after `ready` at which to kill, one
#                                 round each (default: "1 2.5 5")
#   DAXLOG_POWER_CUT_BIN          a prebuilt power_cut binary (default: build it
#                                 with cargo build --release --example power_cut)
#   DAXLOG_POWER_CUT_CAPACITY_MIB log capacity when it is created (default: 64)
#   DAXLOG_POWER_CUT_WORK         images and logs (default: tests/dax-vm/tmp/power-cut,
#                                 git-ignored); the image of a failed round is kept
#                                 there as crash-<fs>-<round>.img
#   DAXVM_*                       knobs of run-in-dax-vm.sh (see its --help)
#   CARGO                         cargo binary (default: cargo)
set -uo pipefail

FILESYSTEMS=${DAXLOG_POWER_CUT_FS:-"ext4 xfs ext4-nodax ext4-nodax-prefill"}
NODAX_THREADS=${DAXLOG_POWER_CUT_NODAX_THREADS:-4}
KILL_TIMES=${DAXLOG_POWER_CUT_KILL_TIMES:-"1 2.5 5"}
CAPACITY_MIB=${DAXLOG_POWER_CUT_CAPACITY_MIB:-64}
LOG_PATH=/mnt/pmem/log.dax   # run-in-dax-vm.sh mounts the DAX file system at /mnt/pmem

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
RUNNER=$SCRIPT_DIR/run-in-dax-vm.sh
WORK=${DAXLOG_POWER_CUT_WORK:-$SCRIPT_DIR/tmp/power-cut}
CARGO=${CARGO:-cargo}

say() { echo "power-cut: $*" >&2; }
fail() { echo "power-cut: FAILED: $*" >&2; exit 1; }

if [[ ${DAXLOG_SKIP_DAX_VM:-} == 1 ]]; then
  echo "power-cut: SKIPPED (DAXLOG_SKIP_DAX_VM=1)"
  exit 0
fi
T_START=$SECONDS
mkdir -p "$WORK" || fail "cannot create $WORK"
"$RUNNER" --setup >/dev/null ||
  fail "cannot boot the DAX test VM (see above); set DAXLOG_SKIP_DAX_VM=1 to skip"

BIN=${DAXLOG_POWER_CUT_BIN:-}
if [[ -z $BIN ]]; then
  say "building: cargo build --release --example power_cut"
  (cd "$ROOT" && "$CARGO" build --release --example power_cut --message-format=json) > "$WORK/build.json" ||
    fail "cargo build --example power_cut failed"
  BIN=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{"):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "power_cut" and "example" in m["target"]["kind"] and m.get("executable"):
            print(m["executable"])' "$WORK/build.json" | tail -1)
  [[ -n $BIN ]] || fail "no power_cut executable in cargo's output ($WORK/build.json)"
fi
[[ -x $BIN ]] || fail "not an executable: $BIN"

# highest LSN of the complete "ack N" lines of a file (a line cut by the kill is
# ignored; with several appender threads the acks are printed out of order)
last_ack() {
  local f=$1
  if [[ -s $f && $(tail -c1 "$f" | od -An -tx1 | tr -d ' ') != 0a ]]; then
    head -n -1 "$f"
  else
    cat "$f"
  fi | grep -aoE '^ack [0-9]+$' | cut -d' ' -f2 | sort -n | tail -1
}

RESULTS=() failed=0
for fs in $FILESYSTEMS; do
  img=$WORK/pmem-$fs.img
  prefill= kills=$KILL_TIMES
  if [[ $fs == *-prefill ]]; then
    prefill=prefill kills=${KILL_TIMES%% *}
  fi
  if [[ ${fs%-prefill} == *-nodax ]]; then
    mfs=${fs%-prefill} mfs=${mfs%-nodax} mopts=dax=never threads=$NODAX_THREADS want=msync
    [[ $fs == *-prefill ]] && threads=${DAXLOG_POWER_CUT_PREFILL_THREADS:-32}
  else
    mfs=$fs mopts=dax threads=1 want=
  fi
  rm -f "$img"
  round=0
  for k in $kills; do
    round=$((round + 1))
    wlog=$WORK/$fs-$round-write.log clog=$WORK/$fs-$round-check.log
    [[ $round == 1 ]] && mkfs=always || mkfs=never
    say "=== $fs round $round: append, power cut ${k}s after ready"
    "$RUNNER" --fs "$mfs" --mount-opts "$mopts" --backing "$img" --mkfs "$mkfs" --kill-after "$k" \
      --kill-arm '^ready' "$BIN" write "$LOG_PATH" "$CAPACITY_MIB" "$threads" $prefill > "$wlog" 2> "$wlog.err"
    wrc=$?
    grep -a 'VM wall time' "$wlog.err" >&2
    ready=$(grep -aoE '^ready .*' "$wlog" | head -1)
    acked=$(last_ack "$wlog")
    nacks=$(grep -acE '^ack [0-9]+$' "$wlog")
    full=$(grep -aoE '^full last=[0-9]+' "$wlog" | head -1)
    if [[ $wrc != 137 || -z $ready ]]; then
      cat "$wlog.err" >&2; tail -5 "$wlog" >&2
      RESULTS+=("$(printf '%-5s round %d kill %4ss: FAIL writer (exit %s, expected 137 = killed)%s' \
        "$fs" "$round" "$k" "$wrc" "${ready:+ after $ready}")")
      failed=$((failed + 1))
      break                       # the image is in an unknown state
    fi
    if [[ -n $want && $ready != *"persistence=$want"* ]]; then
      RESULTS+=("$(printf '%-5s round %d kill %4ss: FAIL writer did not use %s: %s' \
        "$fs" "$round" "$k" "$want" "$ready")")
      failed=$((failed + 1))
      break
    fi
    [[ -z $acked ]] && acked=$(sed -E 's/^ready last=([0-9]+).*/\1/' <<< "$ready")
    stats=$(grep -aoE '^stats .*' "$wlog" | tail -1)
    say "writer: $ready; $nacks acks received, last ack $acked${full:+; $full}${stats:+; $stats}"

    "$RUNNER" --fs "$mfs" --mount-opts "$mopts" --backing "$img" --mkfs never "$BIN" check "$LOG_PATH" "$acked" > "$clog" 2> "$clog.err"
    crc=$?
    grep -a 'VM wall time' "$clog.err" >&2
    last=$(grep -aoE '^check ok last=[0-9]+' "$clog" | tail -1 | cut -d= -f2)
    if [[ $crc == 0 && -n $last ]]; then
      status="PASS: acked $acked, recovered last=$last (+$((last - acked)) unreported)"
    else
      cat "$clog.err" >&2; cat "$clog" >&2
      status="FAIL check (exit $crc): $(grep -a 'FAILED' "$clog" | head -1)"
      failed=$((failed + 1))
      cp --sparse=always "$img" "$WORK/crash-$fs-$round.img" && status+=" [image kept: crash-$fs-$round.img]"
    fi
    say "$status"
    RESULTS+=("$(printf '%-5s round %d kill %4ss: %s%s%s' "$fs" "$round" "$k" "$status" "${full:+ (log full)}" \
      "${stats:+ [${stats#stats }]}")")
    [[ $crc == 0 ]] || break
  done
  rm -f "$img"
done

echo
echo "power-cut summary (logs in $WORK):"
printf '  %s\n' "${RESULTS[@]}"
echo "  total time: $((SECONDS - T_START))s, failed rounds: $failed"
if [[ $failed -gt 0 ]]; then echo "power-cut: FAILED"; exit 1; fi
echo "power-cut: all rounds passed"
