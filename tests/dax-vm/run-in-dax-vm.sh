#!/usr/bin/env bash
# run-in-dax-vm.sh -- run one program inside a throw-away QEMU Linux VM that has
# emulated persistent memory (kernel parameter memmap=SIZE!OFFSET -> /dev/pmem0),
# formatted ext4 or xfs and mounted with -o dax. In there,
# mmap(MAP_SHARED_VALIDATE|MAP_SYNC) works, which is what daxlog's DAX path needs.
#
# usage: run-in-dax-vm.sh [options] BINARY [ARGS...]
#        run-in-dax-vm.sh --setup        (check host tools, fill the kernel cache, exit)
#   BINARY is copied into the VM (at /daxvm/bin/). Dynamic binaries get the
#   libraries that ldd lists (and the loader) copied in at the same paths;
#   static binaries (Rust: RUSTFLAGS="-C target-feature=+crt-static") also work.
#   It runs as root with cwd = the DAX mount (/mnt/pmem) and the environment
#   variable DAXVM_DIR=/mnt/pmem. Its stdout+stderr are streamed to stdout.
#   Exit code: the binary's; 125 = VM/harness failure (no exit code came back:
#   missing tool, boot failure, guest crash, timeout); 137 = qemu killed by
#   --kill-after.
#
# options (each can also be set with the environment variable shown):
#   --fs ext4|xfs        filesystem on /dev/pmem0                 (DAXVM_FS=ext4)
#   --pmem SIZE!OFFSET   memmap= value, inside guest RAM          (DAXVM_MEMMAP=512M!1G)
#   --mem SIZE           guest RAM; must cover the memmap range   (DAXVM_MEM=2G)
#   --cpus N             guest vCPUs                              (DAXVM_CPUS=2)
#   --accel auto|kvm|tcg auto = KVM if /dev/kvm is usable for a stock kernel
#                        (not PVM), else TCG; a KVM boot that shows no sign
#                        of life within 60 s is retried with TCG  (DAXVM_ACCEL=auto)
#   --timeout SECONDS    hard limit for one VM run                (DAXVM_TIMEOUT=300)
#   --backing FILE       put guest RAM (and so the pmem range) in FILE, mapped
#                        shared by qemu, so pmem content survives VM runs and
#                        qemu kills; the fs is created only if none is there yet
#                                                                 (DAXVM_BACKING=)
#   --mkfs auto|always|never  default: always, or auto with --backing (DAXVM_MKFS)
#   --kill-after SECONDS SIGKILL qemu this long after the binary started
#                        (simulated power cut; use with --backing) (DAXVM_KILL_AFTER=)
#                        NB: every store the guest executed is already in the
#                        host page cache, flushed (CLWB) or not, so this models
#                        a crash after all stores reached memory, not the loss
#                        of unflushed cache lines. The guest's own page cache
#                        (file system metadata not yet written back to
#                        /dev/pmem0) IS lost. Copy FILE (cp --sparse=always)
#                        to keep a crash image for several recoveries.
#   --kill-arm REGEX     start the --kill-after countdown only once a line of
#                        the binary's output matches REGEX (grep -E); if it
#                        never does, qemu is not killed           (DAXVM_KILL_ARM=)
#   --mount-opts OPTS    mount options                            (DAXVM_MOUNT_OPTS=dax)
#   (environment only) DAXVM_MKFS_OPTS  extra mke2fs / mkfs.xfs options, e.g. 2 MiB
#                        alignment: "-E stride=512,stripe_width=512" (ext4), "-d su=2m,sw=1" (xfs)
#   --env K=V            extra environment variable for the binary (repeatable)
#   --file PATH          copy a host file into the VM at /daxvm/files/ (repeatable)
#   --copy-abs PATH      copy a host file (with its libraries, if it is a
#                        dynamic executable) into the VM at the same absolute
#                        path, e.g. binaries a test finds via a compiled-in
#                        path (repeatable)
#   --console            also print the guest console log (to stderr)
#   --setup              only check the host tools and prepare the kernel
#                        cache; exit 0 if a VM could be booted, 125 if not
#   -h|--help
# environment only:
#   DAXVM_CACHE       kernel download/extraction cache (default: <script dir>/cache,
#                     which is git-ignored)
#   DAXVM_KERNEL_PKG  Debian kernel package (default: what linux-image-amd64 depends on)
#   DAXVM_APPEND      extra kernel command-line parameters
#   DAXVM_KVM_CPU, DAXVM_TCG_CPU  qemu -cpu model (defaults: host, max)
#   DAXVM_KEEP=1      keep the temporary work dir (initrd, console log)
#   TMPDIR            where the per-run work dir is made (default /tmp)
#
# host requirements (Debian 12 package names): qemu-system-x86, cpio, gzip,
#   xz-utils, kmod (depmod/modprobe compute the module load order), e2fsprogs
#   and/or xfsprogs (mke2fs / mkfs.xfs and their libraries are copied into the
#   VM), busybox-static (or it is fetched with apt-get download), apt-get and
#   dpkg (the kernel package is fetched once with apt-get download; it does not
#   need to be installed). /dev/kvm is optional; on hosts whose /dev/kvm is a
#   paravirtual PVM that cannot boot a stock kernel, TCG is used. A warm boot
#   to a result takes about 6-10 s under TCG.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FS=${DAXVM_FS:-ext4}
MEMMAP=${DAXVM_MEMMAP:-512M!1G}
MEM=${DAXVM_MEM:-2G}
CPUS=${DAXVM_CPUS:-2}
ACCEL_MODE=${DAXVM_ACCEL:-auto}
TIMEOUT=${DAXVM_TIMEOUT:-300}
BACKING=${DAXVM_BACKING:-}
MKFS=${DAXVM_MKFS:-}
KILL_AFTER=${DAXVM_KILL_AFTER:-}
KILL_ARM=${DAXVM_KILL_ARM:-}
MOUNT_OPTS=${DAXVM_MOUNT_OPTS:-dax}
MKFS_OPTS=${DAXVM_MKFS_OPTS:-}
CACHE=${DAXVM_CACHE:-$SCRIPT_DIR/cache}
SHOW_CONSOLE=
SETUP_ONLY=
ENVS=()
FILES=()
ABS_COPIES=()

die() { echo "run-in-dax-vm: $*" >&2; exit 125; }
log() { echo "run-in-dax-vm: $*" >&2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --fs) FS=$2; shift 2;;
    --pmem) MEMMAP=$2; shift 2;;
    --mem) MEM=$2; shift 2;;
    --cpus) CPUS=$2; shift 2;;
    --accel) ACCEL_MODE=$2; shift 2;;
    --tcg) ACCEL_MODE=tcg; shift;;
    --timeout) TIMEOUT=$2; shift 2;;
    --backing) BACKING=$2; shift 2;;
    --mkfs) MKFS=$2; shift 2;;
    --kill-after) KILL_AFTER=$2; shift 2;;
    --kill-arm) KILL_ARM=$2; shift 2;;
    --mount-opts) MOUNT_OPTS=$2; shift 2;;
    --env) ENVS+=("$2"); shift 2;;
    --file) FILES+=("$2"); shift 2;;
    --copy-abs) ABS_COPIES+=("$2"); shift 2;;
    --console) SHOW_CONSOLE=1; shift;;
    --setup) SETUP_ONLY=1; shift;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    --) shift; break;;
    -*) die "unknown option $1 (see --help)";;
    *) break;;
  esac
done
if [[ -z $SETUP_ONLY ]]; then
  [[ $# -ge 1 ]] || die "usage: $0 [options] BINARY [ARGS...]  (see --help)"
  BIN=$1; shift
  [[ -f $BIN && -x $BIN ]] || die "not an executable file: $BIN"
fi
case $FS in ext4|xfs) ;; *) die "--fs must be ext4 or xfs";; esac
[[ -z $MKFS ]] && { [[ -n $BACKING ]] && MKFS=auto || MKFS=always; }
case $MKFS in auto|always|never) ;; *) die "--mkfs must be auto|always|never";; esac
case $ACCEL_MODE in auto|kvm|tcg) ;; *) die "--accel must be auto|kvm|tcg";; esac
[[ -z $KILL_AFTER || $KILL_AFTER =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--kill-after wants seconds, got '$KILL_AFTER'"

missing=()
for t in qemu-system-x86_64 cpio gzip xz depmod modprobe ldd flock apt-get apt-cache dpkg; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if [[ $FS == ext4 || -n $SETUP_ONLY ]]; then command -v mke2fs >/dev/null || missing+=("mke2fs (e2fsprogs)"); fi
if [[ $FS == xfs || -n $SETUP_ONLY ]]; then command -v mkfs.xfs >/dev/null || missing+=("mkfs.xfs (xfsprogs)"); fi
[[ ${#missing[@]} -eq 0 ]] || die "missing host tools: ${missing[*]}
  (Debian: apt-get install qemu-system-x86 busybox-static e2fsprogs xfsprogs kmod cpio xz-utils)"

# ------------------------------------------------------------ kernel (cached)
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9          # serialise cache population
if [[ ! -f $CACHE/kernel.ok ]]; then
  PKG=${DAXVM_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/{print $2; exit}')}
  [[ -n $PKG ]] || die "cannot resolve the kernel package (run apt-get update?)"
  log "downloading and extracting $PKG into $CACHE (once)"
  rm -rf "$CACHE/debs" "$CACHE/kernel" "$CACHE/vmlinux"; mkdir -p "$CACHE/debs" "$CACHE/kernel"
  (cd "$CACHE/debs" && apt-get download "$PKG" >/dev/null 2>&1) || die "apt-get download $PKG failed"
  dpkg -x "$CACHE"/debs/"$PKG"_*.deb "$CACHE/kernel" || die "dpkg -x of $PKG failed"
  KVER=$(ls "$CACHE/kernel/lib/modules" | head -1)
  [[ -n $KVER ]] || die "no modules in $PKG"
  depmod -b "$CACHE/kernel" "$KVER"     # the .deb ships no modules.dep
  # Uncompressed vmlinux (the bzImage payload is xz). qemu boots it through
  # the PVH entry point (CONFIG_PVH=y), skipping the in-guest decompression,
  # which takes 5-7 s under TCG.
  BZ=$CACHE/kernel/boot/vmlinuz-$KVER
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$BZ" | head -1 | cut -d: -f1 || true)
  if [[ -n $off ]] && xz -dc --single-stream < <(tail -c +$((off + 1)) "$BZ") > "$CACHE/vmlinux" 2>/dev/null &&
     [[ $(head -c 4 "$CACHE/vmlinux" | od -An -c | tr -d ' ') == '177ELF' ]]; then :; else
    log "could not extract vmlinux; will boot the bzImage"; rm -f "$CACHE/vmlinux"
  fi
  rm -rf "$CACHE/debs"
  echo "$KVER" > "$CACHE/kernel.ok"
fi
if [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; then
  BUSYBOX=/bin/busybox                                  # busybox-static is installed
else
  BUSYBOX=$CACHE/busybox/bin/busybox
  if [[ ! -x $BUSYBOX ]]; then
    log "fetching busybox-static"
    rm -rf "$CACHE/busybox"; mkdir -p "$CACHE/busybox"
    (cd "$CACHE/busybox" && apt-get download busybox-static >/dev/null 2>&1 &&
       dpkg -x busybox-static_*.deb .) || die "cannot get busybox-static"
  fi
fi
flock -u 9
KVER=$(cat "$CACHE/kernel.ok")
KDIR=$CACHE/kernel
KERNEL=$CACHE/vmlinux
[[ -f $KERNEL ]] || KERNEL=$KDIR/boot/vmlinuz-$KVER
[[ -f $KERNEL ]] || die "no kernel image in $CACHE (remove $CACHE/kernel.ok to re-fetch)"
if [[ -n $SETUP_ONLY ]]; then
  # prove that qemu can boot this kernel and run a static program on a DAX mount
  BIN=$BUSYBOX
  set -- sh -c 'grep -q " /mnt/pmem .*dax" /proc/mounts && echo "dax mount ok"'
fi

# ------------------------------------------------------------ initramfs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/daxvm-run.XXXXXX")
QPID= WDPID= TAILPID=
cleanup() {
  local p
  for p in $QPID $TAILPID $WDPID; do kill -KILL "$p" 2>/dev/null || true; done
  if [[ -n ${DAXVM_KEEP:-} ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
R=$WORK/root
mkdir -p "$R"/{bin,sbin,dev,proc,sys,mnt/pmem,tmp,etc,lib/modules,daxvm/files}
cp "$BUSYBOX" "$R/bin/busybox"

# copy a file plus the shared libraries ldd lists (if any), to the same paths
copy_with_libs() {
  local src=$1 dst=$2 lib
  mkdir -p "$R$(dirname "$dst")"; cp -L "$src" "$R$dst"
  if ldd "$src" >/dev/null 2>&1; then
    for lib in $(ldd "$src" | grep -oE '/[^ ]+'); do
      [[ -e $R$lib ]] && continue
      mkdir -p "$R$(dirname "$lib")"; cp -L "$lib" "$R$lib"
    done
  fi
}

MODS=(nd_e820 nd_pmem crc32c_generic crc32c-intel)
if [[ $FS == ext4 ]]; then
  MODS+=(ext4)
  copy_with_libs "$(command -v mke2fs)" /sbin/mke2fs
  [[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$R/etc/"
else
  MODS+=(xfs)
  copy_with_libs "$(command -v mkfs.xfs)" /sbin/mkfs.xfs
fi
# module load order: dependencies and softdeps first, de-duplicated
: > "$R/etc/modules.order"
declare -A seen=()
for m in "${MODS[@]}"; do
  while read -r _ path _; do
    [[ -n ${seen[$path]:-} ]] && continue; seen[$path]=1
    cp "$path" "$R/lib/modules/"
    basename "$path" >> "$R/etc/modules.order"
  done < <(modprobe -d "$KDIR" -S "$KVER" --show-depends "$m" | grep '^insmod')
done

BINNAME=$(basename "$BIN")
copy_with_libs "$(readlink -f "$BIN")" "/daxvm/bin/$BINNAME"
for f in "${FILES[@]}"; do cp -L "$f" "$R/daxvm/files/"; done
for f in "${ABS_COPIES[@]}"; do
  [[ $f == /* && -f $f ]] || die "--copy-abs wants an absolute path to a file: $f"
  copy_with_libs "$f" "$f"
done

# arguments and environment, single-quoted for the guest shell
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
  printf 'set --'; for a in "$@"; do printf ' %s' "$(q "$a")"; done; echo
  for e in "${ENVS[@]}"; do printf 'export %s\n' "$(q "$e")"; done
  echo "BINNAME=$(q "$BINNAME")"; echo "FS=$FS"; echo "MKFS=$MKFS"; echo "MOUNT_OPTS=$(q "$MOUNT_OPTS")"; echo "MKFS_OPTS=$(q "$MKFS_OPTS")"
} > "$R/daxvm/config"

cat > "$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# /tmp is part of the initramfs root (RAM), so --copy-abs files under /tmp stay visible
say() { echo "daxvm: $*" > /dev/console; }
finish() { say "DAXVM_EXIT_CODE=$1"; sync; poweroff -f; sleep 5; }
fail() { say "DAXVM_HARNESS_ERROR: $*"; dmesg | tail -15 > /dev/console; finish 125; }
. /daxvm/config
say "init at $(cut -d' ' -f1 /proc/uptime)s"
for m in $(cat /etc/modules.order); do
  insmod /lib/modules/$m 2>/dev/null || say "insmod $m failed (ignored)"
done
i=0; while [ ! -b /dev/pmem0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/pmem0 ] || fail "no /dev/pmem0 (memmap= range outside guest RAM?)"
# which fs is on pmem0? (busybox has no blkid here): xfs "XFSB" at 0, ext4 0xEF53 at 1080
have_fs=
[ "$(dd if=/dev/pmem0 bs=4 count=1 2>/dev/null)" = XFSB ] && have_fs=xfs
[ "$(dd if=/dev/pmem0 bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 53ef ] && have_fs=ext4
if [ "$MKFS" = always ] || { [ "$MKFS" = auto ] && [ "$have_fs" != "$FS" ]; }; then
  if [ "$FS" = ext4 ]; then
    /sbin/mke2fs -q -F -t ext4 -b 4096 -E nodiscard $MKFS_OPTS /dev/pmem0 > /dev/console 2>&1 || fail mke2fs
  else
    /sbin/mkfs.xfs -q -f -K $MKFS_OPTS /dev/pmem0 > /dev/console 2>&1 || fail mkfs.xfs
  fi
  say "created $FS on /dev/pmem0"
else
  say "reusing existing $FS on /dev/pmem0"
fi
mount -t $FS -o "$MOUNT_OPTS" /dev/pmem0 /mnt/pmem ||
  fail "mount -t $FS -o $MOUNT_OPTS /dev/pmem0 failed (found fs: ${have_fs:-none})"
say "mounted: $(grep pmem0 /proc/mounts)"
dmesg | grep -iE 'dax|pmem|EXT4-fs|XFS' | sed 's/^/daxvm-dmesg: /' > /dev/console
cd /mnt/pmem
export DAXVM_DIR=/mnt/pmem HOME=/tmp TMPDIR=/tmp
stty -F /dev/ttyS1 raw -echo 2>/dev/null    # no \n -> \r\n on the output port
say "DAXVM_TEST_START at $(cut -d' ' -f1 /proc/uptime)s"
"/daxvm/bin/$BINNAME" "$@" > /dev/ttyS1 2>&1 < /dev/null
rc=$?
say "test done at $(cut -d' ' -f1 /proc/uptime)s"
cd /
umount /mnt/pmem || say "umount failed"
finish $rc
EOF
chmod +x "$R/init"
(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$WORK/initrd.gz"

# ------------------------------------------------------------ boot
kvm_ok() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  # PVM ("Pagetable-based VM", kvm_pvm module) exposes /dev/kvm in nested
  # cloud VMs without VMX/SVM, but only boots PVM-enabled guest kernels.
  [[ ! -d /sys/module/kvm_pvm ]] || return 1
  return 0
}
if [[ $ACCEL_MODE == auto ]]; then
  if kvm_ok; then ACCEL=kvm; else ACCEL=tcg
    log "no usable KVM ($( [[ -d /sys/module/kvm_pvm ]] && echo 'PVM host' || echo 'no /dev/kvm')); using TCG"
  fi
else ACCEL=$ACCEL_MODE; fi

MEMARGS=(-m "$MEM")
if [[ -n $BACKING ]]; then
  [[ -e $BACKING ]] || truncate -s "$MEM" "$BACKING"
  MEMARGS=(-m "$MEM" -machine "pc,memory-backend=daxvm-ram"
           -object "memory-backend-file,id=daxvm-ram,size=$MEM,mem-path=$BACKING,share=on")
fi
APPEND="console=ttyS0 memmap=$MEMMAP panic=-1 quiet loglevel=3 rdinit=/init ${DAXVM_APPEND:-}"

# boot_vm ACCEL [BOOT_LIMIT_S] -> sets qrc, killed; non-zero if killed for no sign of life
boot_vm() {
  local accel=$1 boot_limit=${2:-0} a
  if [[ $accel == kvm ]]; then a=(-accel kvm -cpu "${DAXVM_KVM_CPU:-host}")
  else a=(-accel tcg -cpu "${DAXVM_TCG_CPU:-max}"); fi
  : > "$WORK/console.log"; : > "$WORK/out.log"
  qemu-system-x86_64 "${a[@]}" "${MEMARGS[@]}" -smp "$CPUS" \
    -display none -monitor none -no-reboot -nodefaults \
    -serial "file:$WORK/console.log" -serial "file:$WORK/out.log" \
    -kernel "$KERNEL" -initrd "$WORK/initrd.gz" -append "$APPEND" &
  QPID=$!
  ( trap 'kill $sp 2>/dev/null; exit 0' TERM; sleep "$TIMEOUT" & sp=$!; wait $sp
    kill -KILL $QPID 2>/dev/null && echo "run-in-dax-vm: timeout ${TIMEOUT}s, qemu killed" >&2 ) &
  WDPID=$!
  tail -s 0.1 -n +1 -f --pid=$QPID "$WORK/out.log" 2>/dev/null &
  TAILPID=$!
  killed= ; local t=0 nolife=
  if [[ $boot_limit -gt 0 || -n $KILL_AFTER ]]; then
    while kill -0 $QPID 2>/dev/null; do
      if [[ $boot_limit -gt 0 ]] && ! grep -q 'daxvm: init' "$WORK/console.log"; then
        if (( t >= boot_limit * 10 )); then kill -KILL $QPID; nolife=1; break; fi
      elif [[ -n $KILL_AFTER ]] && grep -q DAXVM_TEST_START "$WORK/console.log" &&
           { [[ -z $KILL_ARM ]] || grep -aqE -- "$KILL_ARM" "$WORK/out.log"; }; then
        [[ -n $KILL_ARM ]] && log "kill armed by output matching '$KILL_ARM'; SIGKILL in ${KILL_AFTER}s"
        sleep "$KILL_AFTER"
        kill -KILL $QPID 2>/dev/null && killed=1
        break
      elif [[ -z $KILL_AFTER ]]; then break
      fi
      sleep 0.1; t=$((t + 1))
    done
  fi
  set +e; wait $QPID 2>/dev/null; qrc=$?; set -e; QPID=
  wait $TAILPID 2>/dev/null || true; TAILPID=
  kill $WDPID 2>/dev/null || true; wait $WDPID 2>/dev/null || true; WDPID=
  [[ -z $nolife ]]
}

T0=$(date +%s.%N)
if [[ $ACCEL == kvm && $ACCEL_MODE == auto ]]; then
  boot_vm kvm 60 || true
  if ! grep -q 'daxvm: init' "$WORK/console.log"; then
    log "KVM boot failed (qemu rc=$qrc, no sign of life); retrying with TCG"
    ACCEL=tcg; T0=$(date +%s.%N); boot_vm tcg || true
  fi
else
  boot_vm "$ACCEL" || true
fi
T1=$(date +%s.%N)
tr -d '\r' < "$WORK/console.log" > "$WORK/console.txt"
[[ -n $SHOW_CONSOLE ]] && sed 's/^/[console] /' "$WORK/console.txt" >&2
log "VM wall time $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.2f", b-a}')s (accel=$ACCEL, fs=$FS, qemu rc=$qrc)"
if [[ -n $killed ]]; then log "qemu SIGKILLed ${KILL_AFTER}s after the test started${KILL_ARM:+ (and was armed)}"; exit 137; fi
rc=$(grep -ao 'DAXVM_EXIT_CODE=[0-9]*' "$WORK/console.txt" | tail -1 | cut -d= -f2 || true)
if [[ -z $rc ]] || grep -q DAXVM_HARNESS_ERROR "$WORK/console.txt"; then
  log "VM harness failure (no exit code, or setup failed in the guest); last console lines:"
  tail -40 "$WORK/console.txt" | sed 's/^/[console] /' >&2
  exit 125
fi
if [[ -n $SETUP_ONLY ]]; then
  [[ $rc == 0 ]] || die "setup: the test VM booted but found no DAX mount (exit $rc)"
  log "setup ok: kernel $KVER, accel=$ACCEL, cache $CACHE"
fi
exit "$rc"
