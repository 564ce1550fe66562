//! Options for creating and opening a log, and the environment variables that may override
//! them when the application asks for it (`Options::from_env`).

use std::ffi::OsString;
use std::time::Duration;

use crate::format::FIRST_LSN;
use crate::map::PersistenceChoice;
use crate::media::Persistence;
use crate::{Error, Lsn, Result};

/// Default capacity of a new log: 64 MiB.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;

/// The size (bytes on media, per append or batch) from which non-temporal stores are used
/// instead of cached stores plus cache-line write-back, on media that do not ask for the
/// host's own measurement (simulators): 0, always. A log file mapped with CPU flushes
/// measures the crossover on its host once per process instead ([`crate::calibrate`]): it is
/// a property of the machine (non-temporal stores won from 64 B on an AMD EPYC guest, cached
/// stores and `CLWB` below about 1 KiB on an Intel Xeon guest; on real Optane the crossover
/// was about 256-512 B). [`Options::nt_threshold`] sets it explicitly.
pub const DEFAULT_NT_THRESHOLD: usize = 0;

/// What recovery does with an entry that fails its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// The default. A bad entry with no valid continuation after it is the torn tail of an
    /// interrupted append: it is discarded and reported ([`crate::TailState::Torn`]). A bad
    /// entry that valid entries continue after, or any unreadable entry an earlier recovery had
    /// accepted, is damage: `open` fails with [`crate::Error::Corrupted`] rather than drop the
    /// entries after it.
    #[default]
    TolerateTornTail,
    /// Any invalid entry, a torn tail included, fails the open with
    /// [`crate::Error::Corrupted`].
    Strict,
    /// For rescuing data (read-only opens only): the log opens with the valid entries before
    /// the first damage, and [`crate::RecoveryReport::gaps`] lists every damaged region with the
    /// LSNs it swallowed; [`crate::Log::salvage`] visits every valid entry past the gaps too.
    Salvage,
}

/// How to create or open a log.
///
/// `Options::new()` is exactly what its builder methods say: the environment plays no part.
/// An application that wants operators to be able to force a mode without a rebuild (the
/// `daxlog` tool, benchmarks, tests) starts from [`Options::from_env`] instead, which lets the
/// variables below override the fields it does not set explicitly:
///
#[doc = include_str!("../docs/ENVIRONMENT.md")]
///
/// ```
/// use daxlog::{Options, PersistenceChoice};
/// let opts = Options::new()
///     .capacity(16 << 20)
///     .persistence(PersistenceChoice::ForceMsync)
///     .nt_threshold(usize::MAX);
/// assert_eq!(opts.get_capacity(), 16 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) capacity: u64,
    pub(crate) overwrite: bool,
    pub(crate) persistence: Option<PersistenceChoice>,
    pub(crate) flush: Option<Persistence>,
    pub(crate) nt_threshold: Option<usize>,
    pub(crate) batch_nt_threshold: Option<usize>,
    pub(crate) env: bool,
    pub(crate) recovery: RecoveryMode,
    pub(crate) tail_hint_every: Option<u64>,
    pub(crate) first_lsn: Lsn,
    pub(crate) mode: u32,
    pub(crate) huge_page_align: Option<bool>,
    pub(crate) prefill: bool,
    pub(crate) lock_wait: Duration,
    pub(crate) yield_while_waiting: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Defaults: 64 MiB capacity, automatic persistence mode, first LSN 1, new files with mode
    /// `0o600`; no environment variable is read.
    pub fn new() -> Self {
        Options {
            capacity: DEFAULT_CAPACITY,
            overwrite: false,
            persistence: None,
            flush: None,
            nt_threshold: None,
            batch_nt_threshold: None,
            env: false,
            recovery: RecoveryMode::TolerateTornTail,
            tail_hint_every: None,
            first_lsn: FIRST_LSN,
            mode: DEFAULT_MODE,
            huge_page_align: None,
            prefill: false,
            lock_wait: Duration::ZERO,
            yield_while_waiting: None,
        }
    }

    /// [`Options::new`] with the `DAXLOG_*` environment variables allowed to override the
    /// fields that are not set explicitly (see the table on [`Options`]).
    pub fn from_env() -> Self {
        Self::new().env_overrides(true)
    }

    /// Whether the `DAXLOG_*` environment variables may override the fields that are not set
    /// explicitly (default: no; [`Options::from_env`] says yes).
    pub fn env_overrides(mut self, yes: bool) -> Self {
        self.env = yes;
        self
    }

    /// True if the environment may override unset fields.
    pub fn get_env_overrides(&self) -> bool {
        self.env
    }

    /// Bounded recovery: every `bytes` of appends, record a durable entry near the tail in the
    /// metadata slot (one slot update, never on the append itself), and let `open` start its
    /// scan there instead of at the head (FORMAT.md, "Tail hint"). Entries before the hint are
    /// then not validated at open, nor later when read (reads check LSNs, not checksums):
    /// [`Log::verify`](crate::Log::verify) and `daxlog check` validate everything. Off by
    /// default; 0 turns it off.
    pub fn tail_hint_every(mut self, bytes: u64) -> Self {
        self.tail_hint_every = Some(bytes);
        self
    }

    pub(crate) fn resolved_tail_hint_every(&self) -> Option<u64> {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.tail_hint_every.filter(|&b| b > 0)
    }

    /// What recovery does with entries that fail their checks (default:
    /// [`RecoveryMode::TolerateTornTail`]).
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// Total file size of a new log in bytes: a multiple of 4096, at least 8192 (used by
    /// `create` only; an existing log keeps the capacity it was created with).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// The LSN of a new log's first entry (default 1; used by `create` only). A log that
    /// continues another (a copy, a salvaged log, a replica that starts from a snapshot) keeps
    /// its LSNs. At least 1.
    pub fn first_lsn(mut self, lsn: Lsn) -> Self {
        self.first_lsn = lsn;
        self
    }

    /// Lets `create` replace an existing file (default: `create` fails if the file exists).
    /// The new log is built beside the old one and renamed over it only once complete: until
    /// then the old log is untouched, and a crash leaves one or the other.
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// Permission bits of a new log file (default `0o600`: readable and writable by its owner
    /// only, like a database's write-ahead log); the process's umask still applies.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o7777;
        self
    }

    /// Chooses the persistence mode.
    pub fn persistence(mut self, choice: PersistenceChoice) -> Self {
        self.persistence = Some(choice);
        self
    }

    /// Forces a flush instruction (ignored if the CPU lacks it, or in `msync` mode).
    pub fn flush_instruction(mut self, p: Persistence) -> Self {
        self.flush = Some(p);
        self
    }

    /// Appends (or batches) of at least this many bytes on media use non-temporal stores;
    /// `usize::MAX` disables them, 0 uses them always. Unset, a log file measures the
    /// crossover on this host ([`crate::calibrate`]). It also sets the threshold of small
    /// batches unless [`Options::batch_nt_threshold`] does. No effect in msync mode on a
    /// disk-backed file, where stores are `pwrite`s (docs/DISK.md, section 3).
    pub fn nt_threshold(mut self, bytes: usize) -> Self {
        self.nt_threshold = Some(bytes);
        self
    }

    /// Batches of more than one entry and at most 4 KiB on media (assembled in one buffer
    /// and stored with one copy) of at least this many bytes use non-temporal stores. Unset,
    /// it is [`Options::nt_threshold`] if that is set, else the host's calibration, which times
    /// such batches apart from single appends ([`Log::batch_nt_threshold`](crate::Log::batch_nt_threshold));
    /// in msync mode, 64 KiB. No effect in msync mode on a disk-backed file, where stores are
    /// `pwrite`s.
    pub fn batch_nt_threshold(mut self, bytes: usize) -> Self {
        self.batch_nt_threshold = Some(bytes);
        self
    }

    /// Whether mappings of 2 MiB or more are placed at a 2 MiB-aligned address, so that a DAX
    /// file system can map them with huge pages (default: yes).
    pub fn huge_page_align(mut self, yes: bool) -> Self {
        self.huge_page_align = Some(yes);
        self
    }

    /// Whether `create` writes zeros over the whole new file, after allocating it (default:
    /// no; used by `create` only).
    ///
    /// For a log on a disk-backed file system (ext4, xfs, ... without DAX: the `msync`
    /// path). A new file's blocks are allocated but unwritten, and the first write to each
    /// block converts its extent: a sync that writes such a block also writes the file's
    /// extent metadata, which made 4 KiB appends about twice as slow (docs/DISK.md,
    /// "Prefilling"). Without `prefill`, on ext4 and xfs, the log writes those blocks itself
    /// during its first lap, ahead of the tail (2 MiB at a time in its first 16 MiB, then
    /// 16 MiB at a time), and checks that each chunk reached the file before appends store
    /// there ([`Log::writes_ahead`](crate::Log::writes_ahead)); the append that writes them
    /// waits for it: a few milliseconds per 2 MiB, about 20 ms per 16 MiB.
    /// With `prefill`, `create` writes every block once (page by page, so that the page cache
    /// holds the file in single pages, as the mapping's faults would) and syncs it: no append
    /// waits for a chunk. It costs a write of the whole capacity at creation (256 MiB: 0.3 s
    /// on a virtual disk). Not needed on tmpfs (nothing is written back there); on a DAX
    /// mount its effect has not been measured.
    pub fn prefill(mut self, yes: bool) -> Self {
        self.prefill = yes;
        self
    }

    /// Whether an append that waits for another thread's sync of a log on a disk (the `msync`
    /// path) first gives up its CPU in a loop, looking after each turn whether the sync ended,
    /// before it sleeps (default: yes).
    ///
    /// The loop lasts at most two average syncs, and only while syncs average 10 µs to 250 µs
    /// (a disk's write and cache flush; not tmpfs, where nothing changes, nor a disk whose
    /// syncs are slower, where a sleeper's wake-up costs little beside them: with syncs made
    /// slower on purpose, yielding still paid at 150-240 µs and gained nothing at about
    /// 470 µs). Each turn offers the CPU to the other runnable threads first, so the loop
    /// mostly takes CPU time that would otherwise be idle. What it saves is the wake-up of a
    /// sleeper, which on a virtual machine whose idle CPU halted takes tens of microseconds,
    /// and which the next sync's leader waited for: eight threads appending 64 B or 4 KiB to a
    /// log on ext4, on a 2-vCPU guest, made 1.2-1.75x the appends/s with it, for 2.1-2.5x the
    /// CPU-seconds per second (1.4-2.1x the CPU time per append); two threads 1.05x the
    /// appends/s for 2.7x the CPU time (docs/DISK.md, "Yielding waits").
    ///
    /// Turn it off where CPU time is worth more than the appends' rate: a container with a CPU
    /// quota (cgroup `cpu.max`, which the loop spends), a machine billed per CPU second, a
    /// battery, or appenders running under a real-time policy (`SCHED_FIFO`, `SCHED_RR`: their
    /// yields give way only to threads of the same priority).
    /// [`Log::sync_stats`](crate::Log::sync_stats) counts the waits that yielded. With
    /// [`Options::from_env`], `DAXLOG_YIELD_WAIT=0` turns it off where it is not set here.
    pub fn yield_while_waiting(mut self, yes: bool) -> Self {
        self.yield_while_waiting = Some(yes);
        self
    }

    /// How long `open`, `open_read_only` and `create` (with [`Options::overwrite`]) wait for
    /// a lock that another open holds (default: not at all). Where the lock is held, they
    /// try again, after pauses from 1 ms growing to 50 ms, until it is free or `wait` has
    /// passed, and then fail with [`Error::Locked`](crate::Error::Locked) as they do at once
    /// without it; `Duration::MAX` waits for as long as it takes.
    ///
    /// For a lock that is about to end: a writer closing in another process, a `daxlog
    /// check` finishing, or a log closed in this process at the moment another thread
    /// spawned a child, whose copy of the descriptor keeps the lock until the child's
    /// `exec` (FORMAT.md, "Locks between processes"). Each try is a whole open: nothing is
    /// held between tries, so a waiting writer does not keep a snapshot out, nor the other
    /// way round, and who gets the log when it is free is not decided by who waited first.
    ///
    /// The wait blocks the calling thread (it sleeps; from async code, open on a blocking
    /// thread). A `Log` or `Reader` of the same file that this process holds is a holder like
    /// any other: waiting for it from the thread that holds it runs out the whole wait (and
    /// with `Duration::MAX` never ends). `create` waits only at its first look at the path,
    /// before it builds the new log; a log placed at the path while it builds is refused at
    /// once. A [`Reader`](crate::Reader) takes no options: it is refused only while a
    /// replacement of the file is being built, and
    /// [`Reader::open_waiting`](crate::Reader::open_waiting) waits for that.
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// How long an open waits for a lock; see [`Options::lock_wait`].
    pub fn get_lock_wait(&self) -> Duration {
        self.lock_wait
    }

    /// The capacity `create` will use.
    pub fn get_capacity(&self) -> u64 {
        self.capacity
    }

    /// These options with the environment applied: with `env_overrides`, every field that a
    /// `DAXLOG_*` variable may set and that is not set explicitly takes the variable's value,
    /// and the copy no longer reads the environment. Every variable is checked, those that an
    /// explicit setting overrides too: the first whose value is not one of those the table on
    /// [`Options`] accepts fails with [`Error::InvalidEnvironment`].
    pub(crate) fn resolve_env(&self) -> Result<Options> {
        let mut o = self.clone();
        if !self.env {
            return Ok(o);
        }
        let env = EnvOverrides::read(|name| std::env::var_os(name))?;
        o.env = false;
        o.persistence = o.persistence.or(env.persistence);
        o.flush = o.flush.or(env.flush);
        o.nt_threshold = o.nt_threshold.or(env.nt_threshold);
        o.tail_hint_every = o.tail_hint_every.or(env.tail_hint_every);
        o.huge_page_align = o.huge_page_align.or(env.huge_page_align);
        o.yield_while_waiting = o.yield_while_waiting.or(env.yield_wait);
        if let Some(kernel) = env.kernel {
            crate::persist::force_kernel(kernel);
        }
        Ok(o)
    }

    pub(crate) fn resolved_persistence(&self) -> PersistenceChoice {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.persistence.unwrap_or(PersistenceChoice::Auto)
    }

    pub(crate) fn resolved_flush(&self) -> Option<Persistence> {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.flush
    }

    /// The threshold set explicitly (or, with `env_overrides`, by the environment); `None`
    /// leaves the choice to the host's calibration.
    pub(crate) fn resolved_nt_threshold(&self) -> Option<usize> {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.nt_threshold
    }

    /// The small batches' threshold set explicitly, by [`Options::batch_nt_threshold`] or else
    /// by [`Options::nt_threshold`] (or the environment's); `None` leaves it to the host's
    /// calibration.
    pub(crate) fn resolved_batch_nt_threshold(&self) -> Option<usize> {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.batch_nt_threshold.or(self.nt_threshold)
    }

    pub(crate) fn resolved_huge_page_align(&self) -> bool {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.huge_page_align.unwrap_or(true)
    }

    pub(crate) fn resolved_yield_while_waiting(&self) -> bool {
        debug_assert!(!self.env, "options not resolved (Options::resolve_env)");
        self.yield_while_waiting.unwrap_or(true)
    }
}

/// Permission bits of a new log file unless [`Options::mode`] says otherwise.
pub const DEFAULT_MODE: u32 = 0o600;

/// What the `DAXLOG_*` variables ask for (`None`: nothing, the variable is unset or blank).
#[derive(Debug, Default, PartialEq)]
struct EnvOverrides {
    persistence: Option<PersistenceChoice>,
    flush: Option<Persistence>,
    nt_threshold: Option<usize>,
    tail_hint_every: Option<u64>,
    huge_page_align: Option<bool>,
    yield_wait: Option<bool>,
    /// The process's checksum kernel (not a field of the options: `crate::kernel_choice`).
    kernel: Option<&'static str>,
}

/// `DAXLOG_KERNEL`: a checksum kernel this CPU runs, or `None` when unset or blank.
fn kernel_var(get: &impl Fn(&str) -> Option<OsString>) -> Result<Option<&'static str>> {
    parse(
        get,
        "DAXLOG_KERNEL",
        crate::persist::runnable_kernels_text(),
        crate::persist::runnable_kernel,
    )
}

/// Applies `DAXLOG_KERNEL` alone, for the commands that choose their other options
/// themselves (`daxlog bench`); [`Error::InvalidEnvironment`] as for [`Options::from_env`].
pub(crate) fn kernel_from_env() -> Result<()> {
    if let Some(kernel) = kernel_var(&|name| std::env::var_os(name))? {
        crate::persist::force_kernel(kernel);
    }
    Ok(())
}

/// What a flag variable accepts.
const FLAG: &str = "1, true, yes or on; 0, false, no or off (in any case)";

impl EnvOverrides {
    /// Reads the variables through `get` (the process's environment, or a test's), refusing
    /// the first value that is not one of those accepted, and flags that contradict each other.
    fn read(get: impl Fn(&str) -> Option<OsString>) -> Result<EnvOverrides> {
        let force_msync = flag(&get, "DAXLOG_FORCE_MSYNC")?;
        let force_cpu_flush = flag(&get, "DAXLOG_FORCE_CPU_FLUSH")?;
        if force_msync && force_cpu_flush {
            return Err(invalid(
                &get,
                "DAXLOG_FORCE_CPU_FLUSH",
                "off or unset while DAXLOG_FORCE_MSYNC is on (they force opposite modes)",
            ));
        }
        let flush = parse(
            &get,
            "DAXLOG_FLUSH",
            "clwb, clflushopt or clflush (in any case)",
            |t| match t.to_ascii_lowercase().as_str() {
                "clwb" => Some(Persistence::Clwb),
                "clflushopt" => Some(Persistence::ClflushOpt),
                "clflush" => Some(Persistence::Clflush),
                _ => None,
            },
        )?;
        let no_nt = flag(&get, "DAXLOG_NO_NT")?;
        let nt_threshold = parse(
            &get,
            "DAXLOG_NT_THRESHOLD",
            "a whole number of bytes, from 0",
            |t| t.parse::<usize>().ok(),
        )?;
        if no_nt && nt_threshold.is_some() {
            return Err(invalid(
                &get,
                "DAXLOG_NT_THRESHOLD",
                "unset while DAXLOG_NO_NT is on (which turns non-temporal stores off)",
            ));
        }
        let tail_hint_every = parse(
            &get,
            "DAXLOG_TAIL_HINT_EVERY",
            "a whole number of bytes, from 0 (0: no tail hint)",
            |t| t.parse::<u64>().ok(),
        )?;
        let page_align = parse(&get, "DAXLOG_MAP_ALIGN", "page (in any case)", |t| {
            t.eq_ignore_ascii_case("page").then_some(())
        })?;
        let yield_wait = switch(&get, "DAXLOG_YIELD_WAIT")?;
        let kernel = kernel_var(&get)?;
        Ok(EnvOverrides {
            persistence: if force_msync {
                Some(PersistenceChoice::ForceMsync)
            } else if force_cpu_flush {
                Some(PersistenceChoice::ForceCpuFlush)
            } else {
                None
            },
            flush,
            nt_threshold: if no_nt {
                Some(usize::MAX)
            } else {
                nt_threshold
            },
            tail_hint_every,
            huge_page_align: page_align.map(|()| false),
            yield_wait,
            kernel,
        })
    }
}

/// The value of variable `name` read by `accept` from its text, spaces around it ignored;
/// `None` if it is unset or blank. A value `accept` refuses (or that is not UTF-8) is
/// [`Error::InvalidEnvironment`], saying what is `expected`.
fn parse<T>(
    get: &impl Fn(&str) -> Option<OsString>,
    name: &'static str,
    expected: &'static str,
    accept: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>> {
    let Some(raw) = get(name) else {
        return Ok(None);
    };
    match raw.to_str().map(str::trim) {
        Some("") => Ok(None),
        Some(text) => match accept(text) {
            Some(v) => Ok(Some(v)),
            None => Err(invalid(get, name, expected)),
        },
        None => Err(invalid(get, name, expected)),
    }
}

/// A flag variable: on, or off (also when unset or blank).
fn flag(get: &impl Fn(&str) -> Option<OsString>, name: &'static str) -> Result<bool> {
    Ok(switch(get, name)? == Some(true))
}

/// A flag variable that may turn a default off: on, off, or `None` when unset or blank.
fn switch(get: &impl Fn(&str) -> Option<OsString>, name: &'static str) -> Result<Option<bool>> {
    parse(get, name, FLAG, |t| match t.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    })
}

/// [`Error::InvalidEnvironment`] for the value variable `name` has.
fn invalid(
    get: &impl Fn(&str) -> Option<OsString>,
    name: &'static str,
    expected: &'static str,
) -> Error {
    Error::InvalidEnvironment {
        name,
        value: get(name).unwrap_or_default().to_string_lossy().into_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<EnvOverrides> {
        EnvOverrides::read(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    #[test]
    fn variables_are_read() {
        assert_eq!(read(&[]).unwrap(), EnvOverrides::default());
        assert_eq!(
            read(&[
                ("DAXLOG_FORCE_CPU_FLUSH", "Yes"),
                ("DAXLOG_FORCE_MSYNC", "off"),
                ("DAXLOG_FLUSH", " ClflushOpt"),
                ("DAXLOG_NT_THRESHOLD", "256 "),
                ("DAXLOG_TAIL_HINT_EVERY", "0"),
                ("DAXLOG_MAP_ALIGN", "page"),
                ("DAXLOG_YIELD_WAIT", "Off"),
                ("DAXLOG_KERNEL", " Portable"),
            ])
            .unwrap(),
            EnvOverrides {
                persistence: Some(PersistenceChoice::ForceCpuFlush),
                flush: Some(Persistence::ClflushOpt),
                nt_threshold: Some(256),
                tail_hint_every: Some(0),
                huge_page_align: Some(false),
                yield_wait: Some(false),
                kernel: Some("portable"),
            }
        );
        assert_eq!(
            read(&[("DAXLOG_YIELD_WAIT", " on")]).unwrap().yield_wait,
            Some(true)
        );
        assert!(matches!(
            read(&[("DAXLOG_YIELD_WAIT", "sometimes")]),
            Err(Error::InvalidEnvironment {
                name: "DAXLOG_YIELD_WAIT",
                ..
            })
        ));
        assert_eq!(
            read(&[("DAXLOG_NO_NT", "1"), ("DAXLOG_FLUSH", " ")]).unwrap(),
            EnvOverrides {
                nt_threshold: Some(usize::MAX),
                ..Default::default()
            }
        );
    }

    #[test]
    fn values_not_accepted_are_named() {
        let e = read(&[("DAXLOG_NT_THRESHOLD", "-1")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment variable DAXLOG_NT_THRESHOLD=\"-1\" is not valid: expected a whole \
             number of bytes, from 0"
        );
        // A kernel this CPU does not run is refused like a name that is none.
        let e = read(&[("DAXLOG_KERNEL", "clmul1024")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "environment variable DAXLOG_KERNEL=\"clmul1024\" is not valid: expected {}",
                crate::persist::runnable_kernels_text()
            )
        );
        let e = read(&[("DAXLOG_FORCE_MSYNC", "1"), ("DAXLOG_FORCE_CPU_FLUSH", "1")]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidEnvironment {
                    name: "DAXLOG_FORCE_CPU_FLUSH",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn options_new_resolve_to_what_they_set() {
        let o = Options::new().nt_threshold(7).resolve_env().unwrap();
        assert!(!o.env);
        assert_eq!(o.resolved_nt_threshold(), Some(7));
        assert_eq!(o.resolved_persistence(), PersistenceChoice::Auto);
        assert!(o.resolved_huge_page_align());
    }
}
