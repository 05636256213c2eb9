//! Threads that keep things tidy (log writing, WAL checkpoints) run at a
//! lower scheduling priority than the request path: when a core is
//! contended, a webhook's ack goes first and the housekeeping waits a
//! little, as it can afford to.

/// How much nicer than the rest of the process housekeeping threads run.
const NICER_BY: i32 = 10;

/// Lowers the calling thread's priority (Linux: nice applies per thread).
/// Anyone may lower their own priority, so this needs no privilege; where
/// it fails anyway the thread just runs at the usual priority.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::gettid();
        let errno = libc::__errno_location();
        *errno = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if now == -1 && *errno != 0 {
            return;
        }
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, now + NICER_BY);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn only_the_calling_thread_is_lowered() {
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let lowered = std::thread::spawn(move || {
            super::lower_this_thread();
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + super::NICER_BY).min(19));
        assert_eq!(nice(), before, "the caller's thread keeps its priority");
    }
}
