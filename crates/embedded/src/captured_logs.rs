//! Log lines kept in memory, for this crate's tests of what it logs. (The test kit has its
//! own, but it reaches the AWS backend, which this crate may not.)

use std::sync::{Arc, Mutex, PoisonError};

/// The lines written so far; a clone writes to the same lines.
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Sends this thread's log lines here while the guard lives.
    pub(crate) fn on_this_thread(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish(),
        )
    }

    /// What was written, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
