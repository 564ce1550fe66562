#!/usr/bin/env bash
# run-tests.sh -- run daxlog's integration tests on real DAX file systems.
#
# usage: tests/dax-vm/run-tests.sh [EXTRA TEST-BINARY ARGS...]
#   e.g. tests/dax-vm/run-tests.sh              (everything)
#        tests/dax-vm/run-tests.sh append       (only tests whose name contains "append")
#
# What it does:
#   1. checks that a VM can be booted (run-in-dax-vm.sh --setup: host tools,
#      kernel cache); if not, it FAILS (exit 1) with the reason;
#   2. builds the workspace's test binaries in release mode
#      (cargo test --workspace --release --no-run --message-format=json) and picks
#      the integration-test binaries of the daxlog package named in TESTS below;
#   3. for each file system in FILESYSTEMS, boots one VM per test binary
#      (run-in-dax-vm.sh: /dev/pmem0 from memmap=, mounted -o dax at /mnt/pmem)
#      and runs the binary there with --test-threads=1 and
#        DAXLOG_TEST_DIR=/mnt/pmem   (where the tests must put their log files)
#        DAXLOG_EXPECT_DAX=1         (tests must fail if MAP_SYNC is not in use)
#   4. prints a summary; exits 1 if any run failed, 0 if all passed.
#
# environment:
#   DAXLOG_SKIP_DAX_VM=1      do nothing: print that the DAX VM tests were skipped, exit 0
#   DAXLOG_DAX_VM_TESTS       test binaries to run (default: "dax integration process_crash readers")
#   DAXLOG_DAX_VM_FS          file systems (default: "ext4 xfs")
#   DAXLOG_DAX_VM_TEST_ARGS   arguments for every test binary (default: "--test-threads=1")
#   DAXLOG_DAX_VM_PASS_ENV    host variables passed into the VM if set
#                             (default: "RUST_BACKTRACE RUST_LOG PROPTEST_CASES")
#   DAXLOG_DAX_VM_LOGS        directory for per-run output (default: tests/dax-vm/tmp/logs,
#                             git-ignored)
#   DAXVM_*                   knobs of run-in-dax-vm.sh (see its --help), e.g.
#                             DAXVM_TIMEOUT=300 (per VM), DAXVM_CPUS, DAXVM_MEM, DAXVM_CACHE
#   CARGO                     cargo binary (default: cargo)
set -uo pipefail

TESTS=${DAXLOG_DAX_VM_TESTS:-"dax integration process_crash readers"}
FILESYSTEMS=${DAXLOG_DAX_VM_FS:-"ext4 xfs"}
TEST_ARGS=${DAXLOG_DAX_VM_TEST_ARGS:-"--test-threads=1"}
PASS_ENV=${DAXLOG_DAX_VM_PASS_ENV:-"RUST_BACKTRACE RUST_LOG PROPTEST_CASES"}
PACKAGE=daxlog
GUEST_DIR=/mnt/pmem          # where run-in-dax-vm.sh mounts the DAX file system

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
RUNNER=$SCRIPT_DIR/run-in-dax-vm.sh
LOGS=${DAXLOG_DAX_VM_LOGS:-$SCRIPT_DIR/tmp/logs}
CARGO=${CARGO:-cargo}

say() { echo "dax-vm-tests: $*" >&2; }
fail() { echo >&2; echo "dax-vm-tests: FAILED: $*" >&2; exit 1; }

if [[ ${DAXLOG_SKIP_DAX_VM:-} == 1 ]]; then
  echo "dax-vm-tests: SKIPPED (DAXLOG_SKIP_DAX_VM=1): no test ran in a DAX VM"
  exit 0
fi
T_START=$SECONDS

# ------------------------------------------------------------ 1. can we boot a VM?
say "checking the VM setup (qemu, kernel cache, pmem, dax mount)"
if ! "$RUNNER" --setup >/dev/null; then
  fail "cannot boot the DAX test VM (see the run-in-dax-vm messages above).
  Install the host packages (Debian: apt-get install qemu-system-x86 busybox-static
  e2fsprogs xfsprogs kmod cpio xz-utils) or set DAXLOG_SKIP_DAX_VM=1 to skip these tests."
fi

# ------------------------------------------------------------ 2. build
mkdir -p "$LOGS" || fail "cannot create $LOGS"
if [[ -n ${DAXLOG_DAX_VM_BIN_DIR:-} ]]; then
  # Prebuilt binaries (the cargo test harness passes its own deps directory): the newest
  # executable NAME-<hash> for each wanted test, and the workspace's bin targets one level up.
  say "using prebuilt test binaries in $DAXLOG_DAX_VM_BIN_DIR"
  PLAN=$(
    for name in $TESTS; do
      exe=$(ls -t "$DAXLOG_DAX_VM_BIN_DIR/$name"-* 2>/dev/null | grep -v '\.d$' | while read -r f; do
        [[ -x $f && -f $f ]] && { echo "$f"; break; }; done)
      if [[ -n $exe ]]; then echo "test $name $exe"; else echo "missing $name"; fi
    done
    for b in "$DAXLOG_DAX_VM_BIN_DIR"/../daxlog; do
      [[ -x $b ]] && echo "bin $(cd "$(dirname "$b")" && pwd)/daxlog"
    done
    true
  )
else
JSON=$LOGS/cargo-build.json
say "building test binaries: cargo test --workspace --release --no-run (in $ROOT)"
(cd "$ROOT" && "$CARGO" test --workspace --release --no-run --message-format=json) > "$JSON" ||
  fail "cargo test --no-run failed"
META=$LOGS/cargo-metadata.json
(cd "$ROOT" && "$CARGO" metadata --no-deps --format-version 1) > "$META" ||
  fail "cargo metadata failed"

# lines "test NAME PATH" for the wanted tests of $PACKAGE, "bin PATH" for every
# bin target of the workspace (copied into the VM at the same path, for tests
# that run them through env!("CARGO_BIN_EXE_...")), "missing NAME".
PLAN=$(python3 - "$JSON" "$META" "$PACKAGE" $TESTS <<'EOF'
import json, sys
cargo_json, meta_json, package, wanted = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
meta = json.load(open(meta_json))
pkg_ids = {p["id"] for p in meta["packages"] if p["name"] == package}
ws_ids = set(meta.get("workspace_members", []))
tests, bins = {}, set()
for line in open(cargo_json):
    line = line.strip()
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kinds = m["target"]["kind"]
    if m["package_id"] in pkg_ids and "test" in kinds and m["profile"]["test"]:
        tests[m["target"]["name"]] = m["executable"]
    elif m["package_id"] in ws_ids and "bin" in kinds and not m["profile"]["test"]:
        bins.add(m["executable"])
for name in wanted:
    print(f"test {name} {tests[name]}" if name in tests else f"missing {name}")
for b in sorted(bins):
    print(f"bin {b}")
EOF
) || fail "could not parse cargo's JSON output ($JSON)"
fi

NAMES=() PATHS=() COPIES=()
while read -r kind a b; do
  case $kind in
    test) NAMES+=("$a"); PATHS+=("$b");;
    bin) COPIES+=(--copy-abs "$a");;
    missing) fail "no integration test binary '$a' in package $PACKAGE (tests/$a.rs);
  the list is DAXLOG_DAX_VM_TESTS (now: $TESTS)";;
  esac
done <<< "$PLAN"
[[ ${#NAMES[@]} -gt 0 ]] || fail "no test binaries selected (DAXLOG_DAX_VM_TESTS is empty?)"

ENVS=(--env "DAXLOG_TEST_DIR=$GUEST_DIR" --env DAXLOG_EXPECT_DAX=1)
for v in $PASS_ENV; do
  [[ -n ${!v+x} ]] && ENVS+=(--env "$v=${!v}")
done
read -r -a ARGS <<< "$TEST_ARGS"
ARGS+=("$@")

# ------------------------------------------------------------ 3. run
RESULTS=() failed=0
for fs in $FILESYSTEMS; do
  for i in "${!NAMES[@]}"; do
    name=${NAMES[$i]} bin=${PATHS[$i]}
    out=$LOGS/$fs-$name.log
    echo
    say "=== $name on $fs -o dax: $(basename "$bin") ${ARGS[*]}"
    t0=$SECONDS
    "$RUNNER" --fs "$fs" "${ENVS[@]}" "${COPIES[@]}" "$bin" "${ARGS[@]}" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    dt=$((SECONDS - t0))
    res=$(grep -a '^test result:' "$out" | sed 's/^test result: //; s/; finished in.*//' | tail -1)
    # harness = false binaries: their last line of output instead
    [[ -n $res ]] || res=$(grep -av '^run-in-dax-vm: ' "$out" | grep -a . | tail -1 | cut -c1-80)
    case $rc in
      0) status=PASS;;
      125) status="FAIL (VM/harness error)"; failed=$((failed + 1));;
      *) status="FAIL (exit $rc)"; failed=$((failed + 1));;
    esac
    RESULTS+=("$(printf '%-5s %-16s %-26s %4ss  %s' "$fs" "$name" "$status" "$dt" "$res")")
  done
done

# ------------------------------------------------------------ 4. summary
echo
echo "dax-vm-tests summary (logs in $LOGS):"
printf '  %s\n' "${RESULTS[@]}"
echo "  total time: $((SECONDS - T_START))s, failed runs: $failed of ${#RESULTS[@]}"
if [[ $failed -gt 0 ]]; then
  echo "dax-vm-tests: FAILED"
  exit 1
fi
echo "dax-vm-tests: all passed"
