//! A persistent-memory simulator for crash-testing daxlog.
//!
//! [`SimMedia`] implements daxlog's [`Media`] trait over an in-memory image and records every
//! store, flush and drain in order.

use std::cell::UnsafeCell;
use std::sync::Mutex;

use daxlog::{Media, Persistence};

/// One operation the engine issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Cached store of `data` at `off`.
    Store { off: usize, data: Vec<u8> },
    /// Non-temporal store of `data` at `off`.
    StoreNt { off: usize, data: Vec<u8> },
    /// Write-back of the lines covering `[off, off + len)`.
    Flush { off: usize, len: usize },
    /// Drain (fence / msync).
    Drain,
}

/// Simulated persistent memory: the current (volatile) view plus a trace of operations.
pub struct SimMedia {
    image: Box<[UnsafeCell<u8>]>,
    mode: Persistence,
    trace: Mutex<Vec<Op>>,
}

// SAFETY: the image is only accessed through `Media` methods whose callers guarantee that
// stores never overlap live reads or other stores.
unsafe impl Sync for SimMedia {}

impl SimMedia {
    /// Media of `len` zero bytes using barrier `mode`.
    pub fn new(len: usize, mode: Persistence) -> Self {
        Self::from_image(&vec![0u8; len], mode)
    }

    /// Media holding a copy of `bytes`.
    pub fn from_image(bytes: &[u8], mode: Persistence) -> Self {
        SimMedia {
            image: bytes.iter().map(|&b| UnsafeCell::new(b)).collect(),
            mode,
            trace: Mutex::new(Vec::new()),
        }
    }

    /// The operations recorded so far.
    pub fn trace(&self) -> Vec<Op> {
        self.trace.lock().unwrap().clone()
    }

    /// A copy of the current (volatile) image.
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.image.iter_mut().map(|c| *c.get_mut()).collect()
    }

    fn ptr(&self, off: usize) -> *mut u8 {
        self.image[off].get()
    }
}

impl Media for SimMedia {
    fn len(&self) -> usize {
        self.image.len()
    }

    fn persistence(&self) -> Persistence {
        self.mode
    }

    unsafe fn read(&self, off: usize, len: usize) -> &[u8] {
        assert!(off + len <= self.image.len());
        if len == 0 {
            return &[];
        }
        // SAFETY: in bounds; `UnsafeCell<u8>` has the layout of `u8`; the caller guarantees no
        // store to the range while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr(off), len) }
    }

    unsafe fn store(&self, off: usize, src: &[u8]) {
        assert!(off + src.len() <= self.image.len());
        if src.is_empty() {
            return;
        }
        // SAFETY: in bounds; the caller guarantees exclusive access to the range.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(off), src.len()) };
        self.trace.lock().unwrap().push(Op::Store {
            off,
            data: src.to_vec(),
        });
    }

    unsafe fn store_nt(&self, off: usize, src: &[u8]) {
        assert!(
            off % 8 == 0 && src.len() % 8 == 0,
            "unaligned non-temporal store"
        );
        assert!(off + src.len() <= self.image.len());
        if src.is_empty() {
            return;
        }
        // SAFETY: as for `store`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(off), src.len()) };
        self.trace.lock().unwrap().push(Op::StoreNt {
            off,
            data: src.to_vec(),
        });
    }

    fn flush(&self, off: usize, len: usize) {
        self.trace.lock().unwrap().push(Op::Flush { off, len });
    }

    fn drain(&self) -> std::io::Result<()> {
        self.trace.lock().unwrap().push(Op::Drain);
        Ok(())
    }
}
