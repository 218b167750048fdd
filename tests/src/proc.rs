//! Reading a process's CPU time and peak memory from /proc (the cost rig and the
//! benchmark harness measure with it).

use std::time::Duration;

/// Kernel clock ticks per second for /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time a process has used.
pub fn cpu_time(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) are space separated;
    // utime and stime are fields 14 and 15 of the whole line.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Duration::from_millis((utime + stime) * 1000 / TICKS_PER_SECOND))
}

/// Context switches (voluntary and not) of the process's live threads: how often its threads
/// went to sleep or were put off the CPU. Threads that have exited are not counted.
pub fn context_switches(pid: u32) -> std::io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else { continue };
        total += status
            .lines()
            .filter_map(|l| {
                l.strip_prefix("voluntary_ctxt_switches:").or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// Bytes the process has handed to `write`-family calls (files and sockets alike).
pub fn bytes_written(pid: u32) -> std::io::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    Ok(io.lines().find_map(|l| l.strip_prefix("wchar:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// Peak resident memory (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(kb * 1024)
}

/// The process running this code.
pub fn me() -> u32 {
    std::process::id()
}
