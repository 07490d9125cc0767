//! The standard `process_*` families (the names every Prometheus client exports), read from
//! `/proc/self` when scraped.

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// This process as of now; a field that cannot be read stays zero (logged once per scrape
    /// at debug: /proc is always there on Linux).
    #[must_use]
    #[expect(
        clippy::cast_precision_loss,
        reason = "clock ticks since boot are far below 2^52"
    )]
    pub fn read() -> Self {
        let mut s = Self::default();
        // SAFETY: sysconf has no preconditions.
        let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        // SAFETY: as above.
        let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
        match std::fs::read_to_string("/proc/self/statm") {
            Ok(statm) => {
                let (vsz, rss) = parse_statm(&statm);
                s.virtual_memory_bytes = vsz * page;
                s.resident_memory_bytes = rss * page;
            }
            Err(e) => tracing::debug!(error = %e, "reading /proc/self/statm"),
        }
        match std::fs::read_to_string("/proc/self/stat") {
            Ok(stat) => {
                if let Some((cpu_ticks, start_ticks)) = parse_stat(&stat) {
                    s.cpu_seconds = cpu_ticks as f64 / ticks as f64;
                    s.start_time_seconds = boot_time() + start_ticks as f64 / ticks as f64;
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading /proc/self/stat"),
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        s
    }

    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            ConstGauge::new(i64::try_from(self.resident_memory_bytes).unwrap_or(i64::MAX)),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            ConstGauge::new(i64::try_from(self.virtual_memory_bytes).unwrap_or(i64::MAX)),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            ConstCounter::new(self.cpu_seconds),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors",
            ConstGauge::new(i64::try_from(self.open_fds).unwrap_or(i64::MAX)),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            ConstGauge::new(self.start_time_seconds),
        );
    }
}

/// (virtual pages, resident pages) of `/proc/self/statm`.
fn parse_statm(text: &str) -> (u64, u64) {
    let mut it = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// (utime + stime, starttime) in clock ticks from `/proc/self/stat`. The command name (field 2)
/// may hold spaces and parentheses: fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15, starttime 22 (1-based).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some((field(14)? + field(15)?, field(22)?))
}

/// The boot time (Unix seconds) from `/proc/stat`'s `btime`.
fn boot_time() -> f64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis.
        let stat = "42 (fer rite) x) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 \
                    1234 1000 200 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((12, 1234)));
        assert_eq!(parse_statm("1000 200 50 1 0 300 0\n"), (1000, 200));
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let s = ProcessStats::read();
        assert!(s.resident_memory_bytes > 0, "{s:?}");
        assert!(s.open_fds >= 3, "{s:?}");
        assert!(s.start_time_seconds > 1.6e9, "{s:?}");
    }
}
