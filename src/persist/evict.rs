//! Evicting cache lines: how the calibration makes a scratch log's next lines as cold as a
//! real log's are.

use super::flush::{flush_range, supported};
use super::kind::Persistence;

/// An instruction of this CPU that evicts cache lines: `CLFLUSHOPT`, else `CLFLUSH` (`CLWB`
/// may keep a line cached, so it never is one).
#[derive(Clone, Copy, Debug)]
pub struct Evictor(Persistence);

impl Evictor {
    /// This CPU's evicting instruction; `None` without cache flushes.
    pub fn new() -> Option<Self> {
        supported()
            .iter()
            .copied()
            .find(|p| *p != Persistence::Clwb)
            .map(Evictor)
    }

    /// Writes back and evicts every cache line covering `[ptr, ptr + len)`, and waits until
    /// that is done (`MFENCE`).
    ///
    /// # Safety
    /// The range lies inside one live mapping.
    pub unsafe fn evict(&self, ptr: *const u8, len: usize) {
        // SAFETY: the caller keeps the range inside one live mapping; `self.0` came from
        // `supported`, so this CPU has it.
        unsafe { flush_range(self.0, ptr, len) };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: MFENCE is part of SSE2, which every x86-64 CPU has.
        unsafe {
            std::arch::x86_64::_mm_mfence()
        };
    }
}
