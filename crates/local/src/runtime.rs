//! The tokio runtime the `hookbridge` binary runs on.

/// The runtime: its async work on one thread fewer than there are cores (at least one),
/// leaving a core to the SQLite writer, the thread every write of the server goes through
/// (decision 0031). On 2 cores, one worker thread rather than tokio's two: about 10 % less
/// CPU per delivery and more deliveries a second at saturation, the tails the same.
/// `TOKIO_WORKER_THREADS`, when set, decides instead, as it does tokio's own default.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = threads_from(std::env::var("TOKIO_WORKER_THREADS"), cores)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidInput, why))?;
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
}

/// The worker threads `TOKIO_WORKER_THREADS` (as read) asks for, or else this machine's
/// ([`worker_threads`]); set but empty, as unset, as every setting here. Read here rather
/// than by tokio, which panicked on a value it could not take (`0`, `auto`, ` 2`): before
/// any logging, with a panic's message rather than the setting's name.
fn threads_from(set: Result<String, std::env::VarError>, cores: usize) -> Result<usize, String> {
    let value = match set {
        Err(std::env::VarError::NotPresent) => return Ok(worker_threads(cores)),
        Err(std::env::VarError::NotUnicode(v)) => format!("{v:?}"),
        Ok(v) if v.trim().is_empty() => return Ok(worker_threads(cores)),
        Ok(v) => v,
    };
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("TOKIO_WORKER_THREADS must be a whole number of threads, at least 1 (it is {value:?})")),
    }
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

    #[test]
    fn the_worker_threads_asked_for_are_read_as_every_setting_is() {
        let set = |v: &str| threads_from(Ok(v.to_owned()), 4);
        assert_eq!(threads_from(Err(std::env::VarError::NotPresent), 4), Ok(3));
        assert_eq!((set(""), set("  "), set("2"), set(" 2 ")), (Ok(3), Ok(3), Ok(2), Ok(2)));
        for bad in ["0", "auto", "-1", "2.5"] {
            assert!(set(bad).is_err_and(|e| e.contains("TOKIO_WORKER_THREADS")), "{bad}");
        }
    }
}
