//! Deterministic interleavings of several threads' media operations.
//!
//! Each worker thread [`Scheduler::register`]s and then passes a *gate* before every operation
//! it issues on a [`crate::SimMedia`] (and at [`Scheduler::yield_point`]s the caller adds, e.g.
//! before each append). At a gate the thread parks until the scheduler (the thread that calls
//! [`Scheduler::run`]) hands it the turn. The scheduler lets exactly one thread run at a time:
//! it waits until every worker is *settled*, then picks one of the parked workers with a seeded
//! generator and lets it run to its next gate. So the order of the operations, and the trace,
//! depend only on the seed, while the engine runs its real locking and publication code.
//!
//! A worker that was let go may not reach a gate: it may block inside the engine (on a lock held
//! by a parked worker, waiting for earlier appends to be published) or spin waiting for another
//! worker's progress. Such a worker is settled when the operating system shows it sleeping with
//! no CPU time spent between two looks, or when it has used [`SPIN_CPU`] of CPU time without
//! reaching a gate (a spinner: what it waits for needs a parked worker). Both are read from
//! Linux (`/proc/thread-self/task/<tid>/stat` and the thread's CPU-time clock); the engine's work
//! between two media operations takes microseconds, far below `SPIN_CPU`.
//!
//! The interleaving follows from the seed as long as no worker that the running one wakes can
//! then race it to something not behind a gate. Besides the media operations, daxlog offers
//! simulators a gate at each turn of its reservation loop (`Media::sync_point`), where an
//! appender reads what other threads have done and takes its place by compare-and-swap: so the
//! order of reservations is the scheduler's too. A worker woken by the running one (the
//! writer's lock released after a tail hint or the `CONCURRENT` flag; the group commit's lock
//! in msync mode) runs beside it only until its next gate, without deciding anything the other
//! could see. `tests::a_seed_gives_one_interleaving` checks this with three appenders in both
//! modes, tail hints on.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::{set_gate, set_thread_id, Gate, Op, ThreadId};

/// CPU time a worker may use without reaching a gate before it is taken to be spinning.
pub const SPIN_CPU: Duration = Duration::from_micros(1500);

/// CPU time every spinner must use while another worker is judged blocked (see `settle`).
pub const SPIN_PROGRESS: Duration = Duration::from_micros(200);

/// How long the scheduler waits for any progress before it declares a deadlock.
const STALL_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Spawned, not yet at its first gate.
    Starting,
    /// Waiting at a gate.
    Parked,
    /// Given the turn, not yet woken.
    Released,
    /// Running, blocked or spinning: not at a gate.
    Free,
    /// Finished.
    Done,
}

struct Worker {
    status: Status,
    /// `/proc/self/task/<tid>/stat` of the worker.
    stat_path: Option<String>,
    /// The worker's CPU-time clock.
    clock: Option<libc::clockid_t>,
}

struct State {
    workers: Vec<Worker>,
    turn: Option<usize>,
    /// The gates open for everyone (after a deadlock, so that the workers can finish).
    open: bool,
}

/// How the scheduler picks the next worker.
#[derive(Clone, Copy, Debug)]
pub struct Strategy {
    /// Out of 256: the chance to let the worker that ran last run again (if it is parked), which
    /// makes longer runs of one thread's operations.
    pub stick: u64,
}

/// A deterministic scheduler for worker threads that use [`crate::SimMedia`] (see the module
/// documentation).
pub struct Scheduler {
    state: Mutex<State>,
    /// Workers wait here for their turn.
    turn_cv: Condvar,
    /// The scheduler waits here for workers to park.
    park_cv: Condvar,
    rng: Mutex<Rng>,
    strategy: Strategy,
    choices: Mutex<Vec<u8>>,
}

struct WorkerGate {
    sched: Arc<Scheduler>,
    index: usize,
}

impl Gate for WorkerGate {
    fn before(&self, _op: &Op) {
        self.sched.park(self.index);
    }
}

/// Returned by [`Scheduler::register`]: marks the worker done when dropped (also when it
/// panics), and removes the gate from its thread.
pub struct Registration {
    sched: Arc<Scheduler>,
    index: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        set_gate(None);
        let mut st = self.sched.lock();
        st.workers[self.index].status = Status::Done;
        self.sched.park_cv.notify_all();
    }
}

impl Scheduler {
    /// A scheduler for `workers` threads, picking with `seed`.
    pub fn new(workers: usize, seed: u64, strategy: Strategy) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            state: Mutex::new(State {
                workers: (0..workers)
                    .map(|_| Worker {
                        status: Status::Starting,
                        stat_path: None,
                        clock: None,
                    })
                    .collect(),
                turn: None,
                open: false,
            }),
            turn_cv: Condvar::new(),
            park_cv: Condvar::new(),
            rng: Mutex::new(Rng::new(seed)),
            strategy,
            choices: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called first on worker thread `index`: tags its operations with thread id `index + 1`
    /// and installs its gate. The worker then parks at its first gate or yield point.
    pub fn register(self: &Arc<Self>, index: usize) -> Registration {
        set_thread_id((index + 1) as ThreadId);
        let (stat_path, clock) = os_handles();
        {
            let mut st = self.lock();
            st.workers[index].stat_path = stat_path;
            st.workers[index].clock = clock;
            st.workers[index].status = Status::Free;
        }
        set_gate(Some(Arc::new(WorkerGate {
            sched: Arc::clone(self),
            index,
        })));
        Registration {
            sched: Arc::clone(self),
            index,
        }
    }

    /// A scheduling point without a media operation (e.g. before each append).
    pub fn yield_point(&self, index: usize) {
        self.park(index);
    }

    fn park(&self, index: usize) {
        let mut st = self.lock();
        if st.open {
            return;
        }
        st.workers[index].status = Status::Parked;
        self.park_cv.notify_all();
        while st.turn != Some(index) && !st.open {
            st = self.turn_cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.turn == Some(index) {
            st.turn = None;
        }
        st.workers[index].status = Status::Free;
    }

    /// The sequence of workers the scheduler let run, one byte per turn.
    pub fn choices(&self) -> Vec<u8> {
        self.choices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs the schedule until every worker is done. Panics (after opening every gate) if the
    /// workers stop making progress.
    pub fn run(&self) {
        let mut last: Option<usize> = None;
        loop {
            let parked = match self.settle() {
                Ok(p) => p,
                Err(why) => {
                    let mut st = self.lock();
                    st.open = true;
                    let status: Vec<Status> = st.workers.iter().map(|w| w.status).collect();
                    drop(st);
                    self.turn_cv.notify_all();
                    panic!("scheduler: {why} (workers: {status:?})");
                }
            };
            let Some(parked) = parked else { return };
            let pick = {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                match last {
                    Some(l) if parked.contains(&l) && rng.below(256) < self.strategy.stick => l,
                    _ => parked[rng.below(parked.len() as u64) as usize],
                }
            };
            last = Some(pick);
            self.choices
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pick as u8);
            let mut st = self.lock();
            st.workers[pick].status = Status::Released;
            st.turn = Some(pick);
            drop(st);
            self.turn_cv.notify_all();
        }
    }

    /// Waits until every worker is parked, done, blocked or spinning. Returns the parked ones
    /// (sorted), or `None` when all are done.
    ///
    /// A free worker counts as blocked when it is asleep with no CPU time spent over a window
    /// of looks, and as spinning once it has used [`SPIN_CPU`] since the scheduler first saw it
    /// free. A worker can be asleep only for a moment on a lock a spinner holds briefly (the
    /// msync group commit spins taking the writer lock); so while a worker counts as blocked
    /// the window must also show every spinner running for [`SPIN_PROGRESS`], long enough to
    /// have released such a lock.
    fn settle(&self) -> Result<Option<Vec<usize>>, String> {
        type Look = (char, Option<Duration>);
        let began = Instant::now();
        // CPU time of each free worker when it was first seen free in this call.
        let mut base: Vec<Option<Duration>> = Vec::new();
        // The free workers and the first look of the current window.
        let mut window: Option<(Vec<usize>, Vec<Look>)> = None;
        loop {
            if began.elapsed() > STALL_LIMIT {
                return Err(format!("no progress for {STALL_LIMIT:?}"));
            }
            let st = self.lock();
            if base.is_empty() {
                base = vec![None; st.workers.len()];
            }
            let mut free = Vec::new();
            let mut handles = Vec::new();
            let mut unsettled = false;
            for (i, w) in st.workers.iter().enumerate() {
                match w.status {
                    Status::Parked | Status::Done => {}
                    Status::Starting | Status::Released => unsettled = true,
                    Status::Free => {
                        free.push(i);
                        handles.push((w.stat_path.clone(), w.clock));
                    }
                }
            }
            if unsettled {
                window = None;
                let _ = self
                    .park_cv
                    .wait_timeout(st, Duration::from_micros(200))
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let parked: Vec<usize> = st
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.status == Status::Parked)
                .map(|(i, _)| i)
                .collect();
            drop(st);
            let look: Vec<Look> = handles
                .iter()
                .map(|(p, c)| (os_state(p), cpu_time(*c)))
                .collect();
            for (k, &i) in free.iter().enumerate() {
                if base[i].is_none() {
                    base[i] = look[k].1;
                }
            }
            let settled = match &window {
                Some((ids, first)) if *ids == free => {
                    let mut verdict = Some(true);
                    let mut blocked = false;
                    let mut lagging = false;
                    for (k, &i) in free.iter().enumerate() {
                        let ((s1, c1), (s2, c2)) = (first[k], look[k]);
                        let asleep = is_asleep(s1) && is_asleep(s2) && c1.is_some() && c1 == c2;
                        let used = |from: Option<Duration>| match (from, c2) {
                            (Some(a), Some(b)) => b.saturating_sub(a),
                            _ => Duration::ZERO,
                        };
                        let spinning = used(base[i]) >= SPIN_CPU;
                        if asleep {
                            blocked = true;
                        } else if spinning {
                            lagging |= used(c1) < SPIN_PROGRESS;
                        } else {
                            verdict = None;
                        }
                    }
                    if verdict.is_some() && blocked && lagging {
                        // Keep the window open until the spinners have run.
                        Some(false)
                    } else {
                        verdict
                    }
                }
                _ => None,
            };
            match settled {
                Some(true) => {
                    // Nobody was released meanwhile (only we release), so the parked workers
                    // are still parked; a free one that parked since is settled too.
                    let st = self.lock();
                    let now: Vec<usize> = st
                        .workers
                        .iter()
                        .enumerate()
                        .filter(|(_, w)| w.status == Status::Free)
                        .map(|(i, _)| i)
                        .collect();
                    if now != free {
                        window = None;
                        continue;
                    }
                    if parked.is_empty() {
                        if free.is_empty() {
                            return Ok(None);
                        }
                        // Every remaining worker blocks or spins, and none is at a gate: wait
                        // (a timed wait inside the engine may still let one go on).
                        drop(st);
                        window = None;
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    return Ok(Some(parked));
                }
                Some(false) => {}
                None => {
                    if free.is_empty() {
                        return Ok((!parked.is_empty()).then_some(parked));
                    }
                    window = Some((free, look));
                }
            }
            let st = self.lock();
            let _ = self
                .park_cv
                .wait_timeout(st, Duration::from_micros(60))
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn is_asleep(state: char) -> bool {
    // S: interruptible sleep (futex waits); anything but running or uninterruptible I/O.
    !matches!(state, 'R' | 'D' | '?')
}

/// This thread's `/proc` stat path and CPU-time clock.
fn os_handles() -> (Option<String>, Option<libc::clockid_t>) {
    let stat = std::fs::read_link("/proc/thread-self")
        .ok()
        .map(|p| format!("/proc/{}/stat", p.display()));
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is always valid for the calling thread, and `clock` is a valid
    // out-pointer. The clock stays valid while the thread lives; the scheduler reads it only
    // for workers that are not done (their threads still run).
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    (stat, (rc == 0).then_some(clock))
}

/// The scheduler state letter of a thread (`R`, `S`, `D`, ...), `?` if unknown.
fn os_state(path: &Option<String>) -> char {
    let Some(p) = path else { return '?' };
    let Ok(s) = std::fs::read_to_string(p) else {
        return '?';
    };
    s.rfind(')')
        .and_then(|i| s[i + 1..].trim_start().chars().next())
        .unwrap_or('?')
}

fn cpu_time(clock: Option<libc::clockid_t>) -> Option<Duration> {
    let clock = clock?;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; an invalid clock only makes the call fail.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimMedia;
    use daxlog::{Log, Options, Persistence};

    /// The shape of every operation (what, where, how long, which thread): equal for equal
    /// seeds. (The bytes differ: daxlog draws its salt and epochs at random.)
    fn run(seed: u64, threads: usize, mode: Persistence) -> Vec<(String, u8)> {
        let media = SimMedia::new(4 * 4096, mode);
        let obs = media.observer();
        let opts = Options::new().nt_threshold(256).tail_hint_every(100);
        let log = Log::create_on(media, &opts).unwrap();
        let before = obs.ops();
        let sched = Scheduler::new(threads, seed, Strategy { stick: 64 });
        std::thread::scope(|sc| {
            for t in 0..threads {
                let sched = Arc::clone(&sched);
                let log = &log;
                sc.spawn(move || {
                    let _reg = sched.register(t);
                    for i in 0..4 {
                        sched.yield_point(t);
                        let p = vec![t as u8; 40 + 150 * ((t + i) % 3)];
                        if i == 2 {
                            log.append_batch(&[&p, b"x"]).unwrap();
                        } else {
                            log.append(&p).unwrap();
                        }
                    }
                });
            }
            sched.run();
        });
        let (ops, tids) = log.into_media().take_tagged_trace();
        ops[before..]
            .iter()
            .zip(&tids[before..])
            .map(|(o, &t)| (o.describe(), t))
            .collect()
    }

    #[test]
    fn a_seed_gives_one_interleaving() {
        for (mode, threads) in [(Persistence::Clwb, 3), (Persistence::Msync, 3)] {
            for seed in 1..=6 {
                let a = run(seed, threads, mode);
                let b = run(seed, threads, mode);
                assert_eq!(a, b, "{mode:?}, seed {seed}");
                // The threads do interleave.
                let switches = a.windows(2).filter(|w| w[0].1 != w[1].1).count();
                assert!(switches > 3, "{mode:?}, seed {seed}: {switches} switches");
            }
            assert_ne!(run(1, threads, mode), run(2, threads, mode));
        }
    }
}
