//! The tokio runtime the `hookbridge` binary runs on.

/// The runtime: its async work on one thread fewer than there are cores (at least one),
/// leaving a core to the SQLite writer, the thread every write of the server goes through
/// (decision 0031). On 2 cores, one worker thread rather than tokio's two: about 10 % less
/// CPU per delivery and more deliveries a second at saturation, the tails the same.
/// `TOKIO_WORKER_THREADS`, when set, decides instead, as it does tokio's own default.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        runtime.worker_threads(worker_threads(cores));
    }
    runtime.enable_all().build()
}

/// The worker threads for a machine of `cores` cores.
fn worker_threads(cores: usize) -> usize {
    cores.saturating_sub(1).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_is_left_to_the_writer_but_never_the_only_one() {
        assert_eq!([0, 1, 2, 4, 16].map(worker_threads), [1, 1, 1, 3, 15]);
    }
}
