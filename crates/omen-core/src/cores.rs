//! Whether other processes keep every core busy: background merges sleep meanwhile.
//!
//! A merge worker that only lowers its priority and yields stays runnable, and a runnable
//! process counts in the scheduler's choice of the core a waking process runs on. Measured
//! with `perf sched timehist` on two cores, with one client querying and one inserting while
//! a worker merged: an inserting client was woken on the core running a 0.3 ms query and
//! waited for it there while the other core idled. A worker that sleeps while the cores
//! are busy is on no run queue.

/// Whether more threads are runnable now than the machine has cores, this one included
/// (so: the others alone fill every core). Reads the kernel's instantaneous count of
/// runnable threads, `/proc/loadavg`'s fourth field; false where there is no such file (not
/// Linux).
///
/// The count is the whole machine's: `/proc/loadavg` is not namespaced, so in a container
/// it counts the host's threads. It is compared with the host's online cores for that
/// reason, not with this process's CPU affinity or cgroup quota: a container limited to
/// two cores of a large host would otherwise look busy whenever the host has a few threads
/// running, and its merges would all but stop. There, a merge worker only yields.
pub fn busy() -> bool {
    thread_local! {
        /// `/proc/loadavg`, kept open and read again from offset 0 each time.
        static LOADAVG: Option<std::fs::File> = std::fs::File::open("/proc/loadavg").ok();
        /// The machine's online cores.
        static CORES: usize = online_cores();
    }
    let running = LOADAVG.with(|file| {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        let n = file.as_ref()?.read_at(&mut buf, 0).ok()?;
        runnable(std::str::from_utf8(&buf[..n]).ok()?)
    });
    running.is_some_and(|r| r > CORES.with(|c| *c))
}

/// The share of recent looks at the cores ([`busy`]) that found them busy: an exponential
/// average that weighs about the last eight looks. A merge worker sleeps only while the
/// cores were busy in most looks ([`BusyAverage::look`]), not on one: with one client
/// inserting on two cores, the client and its backend hand the work to each other and are
/// both runnable for a moment at each INSERT, so one look in three found the cores busy.
#[derive(Clone, Copy, Debug, Default)]
pub struct BusyAverage {
    share: f32,
}

impl BusyAverage {
    /// Weight of the newest look.
    const WEIGHT: f32 = 0.125;
    /// Share of busy looks past which the cores count as busy most of the time.
    const MOST: f32 = 0.75;

    pub const fn new() -> BusyAverage {
        BusyAverage { share: 0.0 }
    }

    /// Records one look (`busy`: whether it found the cores busy); returns whether the
    /// cores were busy in most recent looks.
    pub fn look(&mut self, busy: bool) -> bool {
        self.share = self.share * (1.0 - Self::WEIGHT) + if busy { Self::WEIGHT } else { 0.0 };
        self.share > Self::MOST
    }
}

/// The machine's online cores (at least 1).
fn online_cores() -> usize {
    // SAFETY: sysconf only reads a system value; -1 (unknown) is handled below.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n >= 1 { n as usize } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

/// The runnable threads of a `/proc/loadavg` line: "0.52 0.58 0.59 3/412 12345" has 3
/// (of 412 in all; the last number is the last PID).
fn runnable(loadavg: &str) -> Option<usize> {
    loadavg.split_whitespace().nth(3)?.split_once('/')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_runnable_count() {
        assert_eq!(runnable("0.52 0.58 0.59 3/412 12345\n"), Some(3));
        assert_eq!(runnable("12.00 8.10 4.00 17/1024 999"), Some(17));
        assert_eq!(runnable("0.52 0.58 0.59"), None);
        assert_eq!(runnable("0.52 0.58 0.59 x/412 1"), None);
        assert_eq!(runnable(""), None);
    }

    #[test]
    fn busy_most_of_the_time_takes_several_looks() {
        let mut avg = BusyAverage::new();
        // The first busy looks are not enough; about eleven in a row are.
        let first = (1..=64).find(|_| avg.look(true)).unwrap();
        assert!((8..=16).contains(&first), "{first}");
        // After a long busy stretch, two idle looks do not undo it; three do.
        for _ in 0..64 {
            avg.look(true);
        }
        assert!(avg.look(false) && avg.look(false));
        assert!(!avg.look(false));
        // One look in three busy (a lone inserting client) never counts as busy.
        let mut avg = BusyAverage::new();
        assert!((0..300).all(|i| !avg.look(i % 3 == 0)));
        // Nine looks in ten do.
        assert!((0..300).any(|i| avg.look(i % 10 != 0)));
    }

    #[test]
    fn there_is_a_core() {
        assert!(online_cores() >= 1);
        assert!(online_cores() >= std::thread::available_parallelism().map_or(1, |n| n.get()));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_thread_counts_as_runnable() {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap();
        assert!(runnable(&text).unwrap() >= 1, "{text}");
    }
}
