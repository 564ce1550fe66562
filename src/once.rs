//! Choices a process makes once (the checksum kernels, the persistence path's calibration),
//! made so that no thread waits for one that no thread is making for more than a second.
//!
//! `std::sync::OnceLock::get_or_init` makes the other callers wait while one thread runs the
//! initialiser. The choices here time code for 0.2 ms or more; a `fork()` from another thread
//! in that window gives a child in which the cell stays "being initialised" with no thread
//! left to finish it: the child's first open of a log would wait forever. [`Chosen`] runs the
//! initialiser outside the cell, so that the cell is only ever locked while a finished value is
//! moved in (nanoseconds: a fork in them is the one left that would hang the child), and a
//! caller that finds another one choosing waits for it a bounded time only, after which it
//! chooses itself. The first value stored wins; every caller gets that one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A value chosen once per process; see the module's documentation.
pub(crate) struct Chosen<T> {
    cell: OnceLock<T>,
    /// Set by the first caller that began choosing.
    choosing: AtomicBool,
}

/// How long a caller waits for another thread's choice before it makes its own: far longer
/// than a choice takes (the longest, a calibration, takes a few milliseconds), so that in a
/// process that did not fork the choice is made once; bounded, so that a child forked in the
/// middle of a choice is delayed by this much once, not forever.
const PATIENCE: Duration = Duration::from_secs(1);

impl<T> Chosen<T> {
    pub(crate) const fn new() -> Self {
        Chosen {
            cell: OnceLock::new(),
            choosing: AtomicBool::new(false),
        }
    }

    /// The value, chosen by `choose` if no caller chose it before (once chosen, one acquire
    /// load: the hot path's).
    #[inline]
    pub(crate) fn get_or_choose(&self, choose: impl FnOnce() -> T) -> &T {
        match self.cell.get() {
            Some(v) => v,
            None => self.choose(choose),
        }
    }

    #[cold]
    fn choose(&self, choose: impl FnOnce() -> T) -> &T {
        if self.choosing.swap(true, Ordering::AcqRel) {
            let began = Instant::now();
            while began.elapsed() < PATIENCE {
                if let Some(v) = self.cell.get() {
                    return v;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let v = {
            let _unmark = UnmarkIfPanicking(&self.choosing);
            choose()
        };
        // (Another caller may have stored its value first: that one stays, and is returned.)
        let _ = self.cell.set(v);
        self.cell.get().expect("a value was stored")
    }
}

/// Clears the mark of a choice under way if the choice panics: the next caller then chooses
/// at once, as with `OnceLock`, instead of waiting for a choice nobody is making.
struct UnmarkIfPanicking<'a>(&'a AtomicBool);

impl Drop for UnmarkIfPanicking<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(false, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn the_first_value_chosen_is_everyones() {
        let c = Chosen::new();
        assert_eq!(*c.get_or_choose(|| 1), 1);
        assert_eq!(*c.get_or_choose(|| 2), 1);
    }

    #[test]
    fn a_caller_waits_for_the_choice_another_thread_is_making() {
        let c: &'static Chosen<u32> = Box::leak(Box::new(Chosen::new()));
        let (began, go) = (mpsc::channel(), mpsc::channel::<()>());
        let (began_tx, began_rx) = began;
        let (go_tx, go_rx) = go;
        let t = std::thread::spawn(move || {
            *c.get_or_choose(|| {
                began_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                7
            })
        });
        began_rx.recv().unwrap();
        let waiter = std::thread::spawn(move || *c.get_or_choose(|| 8));
        std::thread::sleep(Duration::from_millis(20));
        go_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), 7);
        assert_eq!(
            waiter.join().unwrap(),
            7,
            "the waiter made a choice of its own"
        );
    }

    /// A choice that panics leaves no mark: the next caller chooses at once.
    #[test]
    fn after_a_choice_that_panicked_the_next_caller_chooses_at_once() {
        let c = Chosen::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            *c.get_or_choose(|| panic!("no choice"))
        }));
        assert!(r.is_err());
        assert!(
            !c.choosing.load(Ordering::Relaxed),
            "a mark of a choice no one makes"
        );
        assert_eq!(*c.get_or_choose(|| 3), 3);
    }

    /// A child forked while another thread of its parent is choosing gets a value of its own
    /// instead of waiting forever (with `OnceLock::get_or_init`, the child's call never returns).
    #[test]
    fn a_child_forked_in_the_middle_of_a_choice_chooses_itself() {
        let c: &'static Chosen<u32> = Box::leak(Box::new(Chosen::new()));
        let (began_tx, began_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            *c.get_or_choose(|| {
                began_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                7
            })
        });
        began_rx.recv().unwrap();
        // SAFETY: fork(2) in a test process with other threads: the child only reads the cell,
        // sleeps, stores a u32 in it and leaves with _exit, touching no lock another thread of
        // the parent may have held at the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let v = *c.get_or_choose(|| 9);
            // SAFETY: _exit ends the child at once, without running the parent's exit handlers.
            unsafe { libc::_exit(v as i32) };
        }
        let began = Instant::now();
        let status = loop {
            let mut status = 0;
            // SAFETY: waits for the child forked above; status is a valid out-pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break Some(status);
            }
            if began.elapsed() > Duration::from_secs(10) {
                // SAFETY: the child is ours; kill and reap it.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        go_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), 7);
        let status = status.expect("the child waited for a choice no thread of it was making");
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 9);
    }
}
