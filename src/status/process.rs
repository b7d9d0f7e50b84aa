//! CPU time and memory of this process, from /proc (Linux).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

pub fn process_stats() -> ProcessStats {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    parse(&status, &stat, rustix::param::clock_ticks_per_second())
}

fn kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

fn parse(status: &str, stat: &str, ticks: u64) -> ProcessStats {
    // Fields after the command name (which may contain spaces) start after the last ')';
    // utime and stime are fields 14 and 15 of the whole line.
    let cpu_ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    ProcessStats {
        cpu_seconds: cpu_ticks as f64 / ticks.max(1) as f64,
        rss_bytes: kib(status, "VmRSS:"),
        peak_rss_bytes: kib(status, "VmHWM:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1";
        let s = parse(status, stat, 100);
        assert_eq!(s.rss_bytes, 1024 * 1024);
        assert_eq!(s.peak_rss_bytes, 2048 * 1024);
        assert!((s.cpu_seconds - 3.0).abs() < 1e-9, "{}", s.cpu_seconds);
    }

    #[test]
    fn reads_this_process() {
        let s = process_stats();
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes);
    }
}
