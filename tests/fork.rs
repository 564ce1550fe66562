//! Locks and forked children: the writer's and a snapshot's locks belong to the open file
//! description, which a forked child shares. A log handed to a forked child (a worker, a daemon
//! whose parent returns) stays locked while the child has it, whatever the parent drops, and
//! a child dropping its copies leaves the parent's locks.
//!
//! The tests take turns: a child holds copies of every descriptor of the process, the other
//! tests' logs included.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::temp_dirs;
use daxlog::{Error, LockHolder, Log, Options, Reader};

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn opts() -> Options {
    Options::new().capacity(1 << 20)
}

fn locked_by(r: Result<Log, Error>) -> Option<LockHolder> {
    match r {
        Err(Error::Locked { by, .. }) => Some(by),
        _ => None,
    }
}

/// Waits for child `pid` and returns its exit code (`None` if a signal ended it).
fn reap(pid: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: reaping our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// A child process, killed and reaped when dropped (so that a failed test leaves none behind
/// holding the harness's output).
struct Child(libc::pid_t);

impl Child {
    /// `fork`: the child in the parent, `None` in the child, which must leave through [`run`].
    ///
    /// # Safety
    /// The child may only use what no other thread of the process uses (a child of a
    /// multi-threaded process has only the forking thread; glibc keeps the allocator usable in
    /// it).
    unsafe fn forked() -> Option<Self> {
        // SAFETY: as the caller promises.
        match unsafe { libc::fork() } {
            0 => None,
            pid => {
                assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
                Some(Child(pid))
            }
        }
    }

    /// Waits for the child to end: its exit code (`None` if a signal ended it).
    fn wait(self) -> Option<i32> {
        let pid = self.0;
        std::mem::forget(self);
        reap(pid)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
        reap(self.0);
    }
}

/// A signal from the parent to a forked child, which waits for it at most 30 s.
struct Signal(UnixStream, UnixStream);

impl Signal {
    fn new() -> Self {
        let (give, wait) = UnixStream::pair().unwrap();
        wait.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Signal(give, wait)
    }

    /// In the parent.
    fn give(mut self) {
        self.0.write_all(b"g").unwrap();
    }

    /// In the child: true once given; false if the parent left (or failed) without it.
    fn wait(self) -> bool {
        let Signal(give, mut wait) = self;
        drop(give);
        wait.read_exact(&mut [0u8]).is_ok()
    }
}

/// Runs `f` in a forked child and ends it with `_exit` (no unwinding, none of the parent's
/// exit handlers): 0 if `f` returns true, 1 if false, 2 if it panics (a panic must not
/// unwind into the test harness's copy, which would exit with 0).
fn run(f: impl FnOnce() -> bool) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(_) => 2,
    };
    // SAFETY: `_exit` only ends the process.
    unsafe { libc::_exit(code) }
}

/// A writer handed to a forked child (a pre-forking server, a daemon whose parent returns)
/// stays locked while the child has it, although the parent dropped its copy: no second
/// writer and no snapshot opens it, and every append the child acknowledged is in the log.
/// The same for a snapshot handed over: no writer opens the log under its zero-copy reads.
#[test]
fn a_log_handed_to_a_forked_child_stays_locked_while_the_child_has_it() {
    let _turn = turn();
    for dir in temp_dirs() {
        let path = dir.path().join("handed.dax");
        let log = Log::create(&path, &opts()).unwrap();
        log.append(b"parent").unwrap();
        let go = Signal::new();
        // SAFETY: the child uses only its copies of this test's log and socket, which no other
        // thread touches.
        let Some(child) = (unsafe { Child::forked() }) else {
            run(|| {
                let appended = (0..10).all(|i| log.append(format!("child {i}").as_bytes()).is_ok())
                    && go.wait()
                    && (10..20).all(|i| log.append(format!("child {i}").as_bytes()).is_ok());
                drop(log);
                appended
            })
        };
        drop(log);
        assert_eq!(
            locked_by(Log::open(&path, &opts())),
            Some(LockHolder::Writer)
        );
        assert_eq!(
            locked_by(Log::open_read_only(&path, &opts())),
            Some(LockHolder::Writer)
        );
        go.give();
        assert_eq!(child.wait(), Some(0), "the child's appends failed");
        let log = Log::open(&path, &opts()).unwrap();
        let got: Vec<Vec<u8>> = log.iter().map(|e| e.payload.to_vec()).collect();
        let mut want = vec![b"parent".to_vec()];
        want.extend((0..20).map(|i| format!("child {i}").into_bytes()));
        assert_eq!(got, want);
        drop(log);

        let ro = Log::open_read_only(&path, &opts()).unwrap();
        let go = Signal::new();
        // SAFETY: as above, with the snapshot.
        let Some(child) = (unsafe { Child::forked() }) else {
            run(|| {
                let read = go.wait() && ro.iter().count() == 21;
                drop(ro);
                read
            })
        };
        drop(ro);
        assert_eq!(
            locked_by(Log::open(&path, &opts())),
            Some(LockHolder::Snapshots)
        );
        go.give();
        assert_eq!(child.wait(), Some(0), "the child's snapshot read wrong");
        Log::open(&path, &opts()).unwrap();
    }
}

/// A forked child that drops its copies of a writer and a reader leaves the parent's locks:
/// they belong to the file description both share.
#[test]
fn a_forked_child_dropping_its_copies_leaves_the_parents_locks() {
    let _turn = turn();
    for dir in temp_dirs() {
        let path = dir.path().join("child-drops.dax");
        let log = Log::create(&path, &opts()).unwrap();
        log.append(b"one").unwrap();
        let reader = Reader::open(&path).unwrap();
        // SAFETY: the child drops its copies of this test's log and reader, which no other
        // thread touches.
        let Some(child) = (unsafe { Child::forked() }) else {
            run(|| {
                drop((log, reader));
                true
            })
        };
        assert_eq!(child.wait(), Some(0));
        assert_eq!(
            locked_by(Log::open(&path, &opts())),
            Some(LockHolder::Writer)
        );
        assert_eq!(log.append(b"two").unwrap(), 2);
        drop(log);
        assert_eq!(
            locked_by(Log::create(&path, &opts().overwrite(true))),
            Some(LockHolder::Readers)
        );
        drop(reader);
        Log::create(&path, &opts().overwrite(true)).unwrap();
    }
}
