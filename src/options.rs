//! Options for creating and opening a log, and the environment variables that override them.

use crate::map::PersistenceChoice;
use crate::media::Persistence;

/// Default capacity of a new log: 64 MiB.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;

/// Default size (bytes on media, per append or batch) from which non-temporal stores are used
/// instead of cached stores plus cache-line write-back: 0, always. Non-temporal stores need
/// only the fence, and measured here they beat copy + `CLWB` at every size from 64 B (164 vs
/// 232 ns per 64 B append; see README, "Benchmarks"). On real Optane the crossover was about
/// 256-512 B: set `Options::nt_threshold` or `DAXLOG_NT_THRESHOLD` there.
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
    /// LSNs it swallowed; [`crate::salvage`] visits every valid entry past the gaps too.
    Salvage,
}

/// How to create or open a log.
///
/// Fields left at their defaults can be overridden by environment variables, so that tests and
/// benchmarks can force a mode without code changes:
///
/// | variable | effect |
/// |---|---|
/// | `DAXLOG_FORCE_CPU_FLUSH=1` | use CPU flushes even without `MAP_SYNC` (e.g. on `/dev/shm`) |
/// | `DAXLOG_FORCE_MSYNC=1` | use `msync` even on a DAX mount |
/// | `DAXLOG_FLUSH=clwb\|clflushopt\|clflush` | use this flush instruction (if the CPU has it) |
/// | `DAXLOG_NO_NT=1` | never use non-temporal stores |
/// | `DAXLOG_NT_THRESHOLD=BYTES` | non-temporal stores from this many bytes per append |
/// | `DAXLOG_TAIL_HINT_EVERY=BYTES` | bounded recovery: a tail hint every this many bytes |
///
/// Values set explicitly through the builder methods win over the environment.
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
    pub(crate) use_env: bool,
    pub(crate) recovery: RecoveryMode,
    pub(crate) tail_hint_every: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

impl Options {
    /// Defaults: 64 MiB capacity, automatic persistence mode, environment honoured.
    pub fn new() -> Self {
        Options {
            capacity: DEFAULT_CAPACITY,
            overwrite: false,
            persistence: None,
            flush: None,
            nt_threshold: None,
            use_env: true,
            recovery: RecoveryMode::TolerateTornTail,
            tail_hint_every: None,
        }
    }

    /// Bounded recovery: every `bytes` of appends, record a durable entry near the tail in the
    /// metadata slot (one slot update, never on the append itself), and let `open` start its
    /// scan there instead of at the head (FORMAT.md, "Tail hint"). Entries before the hint are
    /// then not validated at open (`daxlog check` still validates everything). Off by default;
    /// `DAXLOG_TAIL_HINT_EVERY=BYTES` turns it on when this is not set.
    pub fn tail_hint_every(mut self, bytes: u64) -> Self {
        self.tail_hint_every = Some(bytes);
        self
    }

    pub(crate) fn resolved_tail_hint_every(&self) -> Option<u64> {
        if self.tail_hint_every.is_some() || !self.use_env {
            return self.tail_hint_every.filter(|&b| b > 0);
        }
        std::env::var("DAXLOG_TAIL_HINT_EVERY")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|&b: &u64| b > 0)
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

    /// Lets `create` replace an existing file (default: `create` fails if the file exists).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
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
    /// `usize::MAX` disables them, 0 uses them always.
    pub fn nt_threshold(mut self, bytes: usize) -> Self {
        self.nt_threshold = Some(bytes);
        self
    }

    /// Whether the `DAXLOG_*` environment variables may override unset fields (default: yes).
    pub fn use_env(mut self, yes: bool) -> Self {
        self.use_env = yes;
        self
    }

    /// The capacity `create` will use.
    pub fn get_capacity(&self) -> u64 {
        self.capacity
    }

    pub(crate) fn resolved_persistence(&self) -> PersistenceChoice {
        if let Some(p) = self.persistence {
            return p;
        }
        if self.use_env && env_flag("DAXLOG_FORCE_MSYNC") {
            PersistenceChoice::ForceMsync
        } else if self.use_env && env_flag("DAXLOG_FORCE_CPU_FLUSH") {
            PersistenceChoice::ForceCpuFlush
        } else {
            PersistenceChoice::Auto
        }
    }

    pub(crate) fn resolved_flush(&self) -> Option<Persistence> {
        if self.flush.is_some() || !self.use_env {
            return self.flush;
        }
        match std::env::var("DAXLOG_FLUSH")
            .ok()?
            .to_ascii_lowercase()
            .as_str()
        {
            "clwb" => Some(Persistence::Clwb),
            "clflushopt" => Some(Persistence::ClflushOpt),
            "clflush" => Some(Persistence::Clflush),
            _ => None,
        }
    }

    pub(crate) fn resolved_nt_threshold(&self) -> usize {
        if let Some(t) = self.nt_threshold {
            return t;
        }
        if self.use_env {
            if env_flag("DAXLOG_NO_NT") {
                return usize::MAX;
            }
            if let Some(t) = std::env::var("DAXLOG_NT_THRESHOLD")
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                return t;
            }
        }
        DEFAULT_NT_THRESHOLD
    }
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).as_deref(),
        Ok("1") | Ok("true") | Ok("yes") | Ok("on")
    )
}
