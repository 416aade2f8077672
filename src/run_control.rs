//! Process-wide control of long runs: a request to stop at the next checkpoint, and the progress
//! of the phase that is running, for hosts that cannot watch a terminal.
//!
//! Long commands (`md`, `umbrella`, `al`, `grid`) call [`check_stop`] right after each checkpoint is
//! written and, when a stop was requested, return [`Error::Stopped`](crate::Error::Stopped):
//! everything the run had done is on disk, so `--resume` continues it without losing a sample. The
//! Python package requests the stop when the user presses Ctrl-C, because a Python signal handler
//! cannot run while the Rust call holds the thread, and it reads [`progress`] to report to Python's
//! `logging` or a callback; the command line draws the same progress as bars.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
static PROGRESS: Mutex<Option<Progress>> = Mutex::new(None);

/// The phase a long run is in and how far it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What the phase does, e.g. "steps per walker" (MD, umbrella) or "labels (points)" (al).
    pub phase: String,
    /// Units done.
    pub done: u64,
    /// Units in the phase.
    pub total: u64,
}

/// Asks every running long command to stop at its next checkpoint.
pub fn request_stop() {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Withdraws a stop request and forgets the progress: done before a new run starts.
pub fn reset() {
    STOP_REQUESTED.store(false, Ordering::SeqCst);
    if let Ok(mut progress) = PROGRESS.lock() {
        *progress = None;
    }
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// `Err(Error::Stopped)` with `saved` as its message if a stop was requested, else `Ok(())`: the
/// check a long command makes right after writing a checkpoint. `saved` says what is on disk and
/// how to continue.
pub fn check_stop(saved: &str) -> crate::Result<()> {
    if stop_requested() {
        return Err(crate::Error::Stopped(saved.to_owned()));
    }
    Ok(())
}

/// Starts a phase of `total` units.
pub fn start_phase(phase: &str, total: u64) {
    if let Ok(mut progress) = PROGRESS.lock() {
        *progress = Some(Progress { phase: phase.to_owned(), done: 0, total });
    }
}

/// Sets how many units of the current phase are done.
pub fn set_done(done: u64) {
    if let Ok(mut progress) = PROGRESS.lock() {
        if let Some(p) = progress.as_mut() {
            p.done = done;
        }
    }
}

/// Adds `units` to the current phase.
pub fn advance(units: u64) {
    if let Ok(mut progress) = PROGRESS.lock() {
        if let Some(p) = progress.as_mut() {
            p.done += units;
        }
    }
}

/// The current phase and its progress (`None` before the first phase).
pub fn progress() -> Option<Progress> {
    PROGRESS.lock().ok().and_then(|p| p.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_request_is_seen_once_set_and_gone_after_reset() {
        reset();
        assert!(check_stop("x").is_ok());
        start_phase("steps", 10);
        advance(3);
        set_done(7);
        advance(1);
        assert_eq!(progress(), Some(Progress { phase: "steps".into(), done: 8, total: 10 }));
        request_stop();
        let err = check_stop("checkpoint at 8; continue with --resume").unwrap_err();
        assert!(matches!(err, crate::Error::Stopped(_)));
        assert_eq!(err.to_string(), "stopped: checkpoint at 8; continue with --resume");
        reset();
        assert!(!stop_requested());
        assert_eq!(progress(), None);
    }
}
