//! CPU persistence primitives: cache-line write-back, fences and non-temporal copies.
//!
//! In files of their own: the kinds of persistence barrier (`kind`), the flush instruction and
//! its fence (`flush`), the process-wide store-load barrier (`barrier`), the non-temporal copy
//! alone and fused with a checksum (`copy`), CRC-32C (`crc`), with its folding constants
//! (`fold`), its x86-64 carry-less multiplication kernels (`clmul`) and the choice among them
//! (`kernel`), and the eviction of cache lines that `calibrate` uses (`evict`).

mod barrier;
#[cfg(target_arch = "x86_64")]
mod clmul;
mod copy;
mod crc;
mod evict;
mod flush;
mod fold;
mod kernel;
mod kind;

pub use barrier::{heavy_fence, light_fence, membarrier_ready};
pub use copy::{copy_nt, copy_nt_crc32c};
pub use crc::{crc32c_append, crc32c_append_fast, crc32c_entry_pair, crc32c_header, crc32c_pair};
pub use evict::Evictor;
pub use flush::{best, fence, flush_range, prefetch_addr, prefetch_read, supported, CACHE_LINE};
pub(crate) use kernel::{force_kernel, runnable_kernel, runnable_kernels_text};
pub use kernel::{kernel_choice, KernelChoice};
pub use kind::Persistence;
