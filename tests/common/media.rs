//! Media for tests: a vector of bytes that fails where a test asks it to.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use daxlog::{Media, Persistence};

/// Media over a vector (CLWB persistence, nothing to write back) that can panic on one
/// chosen store, once, when armed (`panic_at_store`, counted from 0 over every store), fail
/// one chosen drain, once, and counts the non-temporal stores asked of it.
pub struct FaultyMedia {
    bytes: Box<[UnsafeCell<u8>]>,
    pub panic_at_store: AtomicUsize,
    pub stores: AtomicUsize,
    pub armed: AtomicBool,
    /// The drain (counted from 0) that fails, once.
    pub fail_drain: AtomicUsize,
    pub drains: AtomicUsize,
    /// `store_nt` calls so far.
    pub nt_stores: AtomicUsize,
}

// SAFETY: the engine guarantees that stores never overlap live reads or other stores.
unsafe impl Sync for FaultyMedia {}

impl FaultyMedia {
    pub fn new(len: usize) -> Self {
        FaultyMedia {
            bytes: (0..len).map(|_| UnsafeCell::new(0)).collect(),
            panic_at_store: AtomicUsize::new(usize::MAX),
            stores: AtomicUsize::new(0),
            armed: AtomicBool::new(false),
            fail_drain: AtomicUsize::new(usize::MAX),
            drains: AtomicUsize::new(0),
            nt_stores: AtomicUsize::new(0),
        }
    }
}

impl FaultyMedia {
    /// Media holding `img`.
    pub fn from_image(img: &[u8]) -> Self {
        let m = FaultyMedia::new(img.len());
        for (c, &b) in m.bytes.iter().zip(img) {
            // SAFETY: `m` is not shared yet.
            unsafe { *c.get() = b };
        }
        m
    }

    /// A copy of the bytes.
    pub fn image(&self) -> Vec<u8> {
        // SAFETY: the whole length, in bounds; no store runs while the caller owns `self`.
        unsafe { self.read(0, self.len()) }.to_vec()
    }
}

impl Media for FaultyMedia {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn persistence(&self) -> Persistence {
        Persistence::Clwb
    }
    unsafe fn read(&self, off: usize, len: usize) -> &[u8] {
        // SAFETY: in bounds per the caller; UnsafeCell<u8> has u8's layout.
        unsafe { std::slice::from_raw_parts(self.bytes[off..off + len].as_ptr() as *const u8, len) }
    }
    unsafe fn store(&self, off: usize, src: &[u8]) {
        let n = self.stores.fetch_add(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) && n == self.panic_at_store.load(Ordering::SeqCst) {
            self.armed.store(false, Ordering::SeqCst);
            panic!("injected fault at store {n}");
        }
        // SAFETY: in bounds and exclusive per the caller.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.bytes[off].get(), src.len()) }
    }
    unsafe fn store_nt(&self, off: usize, src: &[u8]) {
        self.nt_stores.fetch_add(1, Ordering::SeqCst);
        // SAFETY: as for `store`.
        unsafe { self.store(off, src) }
    }
    fn flush(&self, _off: usize, _len: usize) {}
    fn drain(&self) -> std::io::Result<()> {
        let n = self.drains.fetch_add(1, Ordering::SeqCst);
        if self
            .fail_drain
            .compare_exchange(n, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return Err(std::io::Error::other(format!(
                "injected failure of drain {n}"
            )));
        }
        Ok(())
    }
}
