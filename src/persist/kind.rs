//! The kinds of persistence barrier: which instruction makes a log's stores durable.

use std::fmt;

/// The persistence barrier a log uses to make appends durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Persistence {
    /// Stores, `CLWB` of each written cache line, one `SFENCE`.
    Clwb,
    /// Stores, `CLFLUSHOPT` of each written cache line, one `SFENCE`.
    ClflushOpt,
    /// Stores, `CLFLUSH` of each written cache line, one `MFENCE`.
    Clflush,
    /// Stores into a page-cache mapping, one `msync(MS_SYNC)` over the touched pages.
    Msync,
}

impl Persistence {
    /// True for the modes that persist with CPU cache write-back instructions (the DAX path).
    pub fn is_cpu_flush(self) -> bool {
        !matches!(self, Persistence::Msync)
    }

    /// A short stable name: `clwb`, `clflushopt`, `clflush` or `msync`.
    pub fn name(self) -> &'static str {
        match self {
            Persistence::Clwb => "clwb",
            Persistence::ClflushOpt => "clflushopt",
            Persistence::Clflush => "clflush",
            Persistence::Msync => "msync",
        }
    }
}

/// The short name ([`Persistence::name`]): what the `daxlog` tool and its JSON print too.
impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Persistence {
    /// The barrier spelled out: `CLWB+SFENCE`, `CLFLUSHOPT+SFENCE`, `CLFLUSH+MFENCE` or
    /// `msync(MS_SYNC)`.
    pub fn barrier(self) -> &'static str {
        match self {
            Persistence::Clwb => "CLWB+SFENCE",
            Persistence::ClflushOpt => "CLFLUSHOPT+SFENCE",
            Persistence::Clflush => "CLFLUSH+MFENCE",
            Persistence::Msync => "msync(MS_SYNC)",
        }
    }
}
