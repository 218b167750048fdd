use clap::Parser;

/// mimalloc rather than glibc's malloc for Rust's allocations (decision 0029): the server's
/// threads free much of what others allocated (the writer thread frees what the tokio
/// workers built, and the other way round), and glibc takes the owning arena's lock for
/// every free its small per-thread cache does not take (a block over about 1 KiB, or any
/// once that size's cache is full) and for `realloc`. Waiting on those locks was 7 % of a
/// saturation run's samples; mimalloc frees across threads without a lock, and a delivery
/// costs about 14 % less CPU. SQLite's own allocations still go through glibc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    hookbridge_local::runtime::build()?.block_on(async {
        hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stderr)?;
        hookbridge_local::cli::run(hookbridge_local::cli::Cli::parse()).await
    })
}
