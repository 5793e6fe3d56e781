//! What workers tell the coordinator (JSON lines on stdout), and the totals
//! the coordinator prints: counts, latency percentiles, rates, memory, and
//! the pass/fail checks.

use serde::{Deserialize, Serialize};

/// One line from a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// Every browser is created and watching (or the phase limit passed).
    Ready(Ready),
    Result(WorkerResult),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub index: usize,
    pub created: usize,
    pub connected: usize,
    pub connect_secs: f64,
    pub rss_kib: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub index: usize,
    pub clients: usize,
    pub created: usize,
    pub create_failures: usize,
    pub connected: usize,
    pub sse: usize,
    pub ws: usize,
    pub confirms_sent: usize,
    pub confirms_ok: usize,
    /// Browsers that reached their goal (CONFIRMED, or REDEEMED with redeem).
    pub reached_goal: usize,
    /// Browsers that ended in another final state (EXPIRED...).
    pub wrong_final: usize,
    pub redeemed: usize,
    pub reconnects: u64,
    pub reconnect_reasons: std::collections::BTreeMap<String, u64>,
    pub retries: u64,
    pub failures: usize,
    pub verified: usize,
    pub verify_mismatches: usize,
    pub connect_secs: f64,
    /// From the first confirm written to the last confirm answered.
    pub confirm_span_secs: f64,
    /// From the start of the confirm phase until every browser was done.
    pub delivery_secs: f64,
    /// Confirm-to-CONFIRMED latencies of single-attempt confirms, in µs.
    pub latencies_us: Vec<u32>,
    pub rss_kib: u64,
    /// A few failure messages, for the reader.
    pub samples: Vec<String>,
}

/// `p` in 0..=100 of sorted values (nearest rank).
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn latency(values: &mut [u32]) -> Option<Latency> {
    values.sort_unstable();
    let ms = |p| percentile(values, p).map(|v| f64::from(v) / 1000.0);
    Some(Latency {
        count: values.len(),
        median_ms: ms(50.0)?,
        p90_ms: ms(90.0)?,
        p99_ms: ms(99.0)?,
        max_ms: ms(100.0)?,
    })
}

/// Resident memory of a process in KiB (`VmRSS`), if it exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports clock ticks of 1/100 s (USER_HZ) on every common build.
    Some((utime + stime) as f64 / 100.0)
}

/// The sum of all workers' results.
pub fn merge(results: &[WorkerResult]) -> WorkerResult {
    let mut t = WorkerResult::default();
    for r in results {
        t.clients += r.clients;
        t.created += r.created;
        t.create_failures += r.create_failures;
        t.connected += r.connected;
        t.sse += r.sse;
        t.ws += r.ws;
        t.confirms_sent += r.confirms_sent;
        t.confirms_ok += r.confirms_ok;
        t.reached_goal += r.reached_goal;
        t.wrong_final += r.wrong_final;
        t.redeemed += r.redeemed;
        t.reconnects += r.reconnects;
        for (reason, n) in &r.reconnect_reasons {
            *t.reconnect_reasons.entry(reason.clone()).or_default() += n;
        }
        t.retries += r.retries;
        t.failures += r.failures;
        t.verified += r.verified;
        t.verify_mismatches += r.verify_mismatches;
        t.connect_secs = t.connect_secs.max(r.connect_secs);
        t.confirm_span_secs = t.confirm_span_secs.max(r.confirm_span_secs);
        t.delivery_secs = t.delivery_secs.max(r.delivery_secs);
        t.latencies_us.extend_from_slice(&r.latencies_us);
        t.rss_kib += r.rss_kib;
        for s in &r.samples {
            if t.samples.len() < 10 {
                t.samples.push(s.clone());
            }
        }
    }
    t
}

/// A named yes/no check of the run.
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: String) -> Self {
        Self {
            name: name.to_owned(),
            ok,
            detail,
        }
    }
}

/// Prints the checks and the closing `N passed, N failed` line.
pub fn print_checks(checks: &[Check]) -> bool {
    for c in checks {
        println!(
            "{} {}: {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let passed = checks.iter().filter(|c| c.ok).count();
    println!("{passed} passed, {} failed", checks.len() - passed);
    passed == checks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let l = latency(&mut v).unwrap();
        assert_eq!(
            (l.median_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (0.05, 0.09, 0.099, 0.1)
        );
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert!(latency(&mut []).is_none());
    }

    #[test]
    fn merge_adds_counts_and_keeps_slowest_phase() {
        let a = WorkerResult {
            clients: 3,
            reached_goal: 3,
            connect_secs: 2.0,
            latencies_us: vec![5, 6],
            ..Default::default()
        };
        let b = WorkerResult {
            clients: 2,
            reached_goal: 1,
            connect_secs: 4.0,
            latencies_us: vec![7],
            ..Default::default()
        };
        let t = merge(&[a, b]);
        assert_eq!((t.clients, t.reached_goal, t.connect_secs), (5, 4, 4.0));
        assert_eq!(t.latencies_us, vec![5, 6, 7]);
    }

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let line = serde_json::to_string(&WorkerMessage::Ready(Ready {
            index: 1,
            created: 2,
            connected: 2,
            connect_secs: 0.5,
            rss_kib: 10,
        }))
        .unwrap();
        assert!(line.starts_with(r#"{"type":"ready""#));
        assert!(matches!(
            serde_json::from_str::<WorkerMessage>(&line).unwrap(),
            WorkerMessage::Ready(Ready { created: 2, .. })
        ));
    }

    #[test]
    fn own_memory_and_cpu_are_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let before = cpu_secs(std::process::id()).unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_secs(std::process::id()).unwrap() > before);
        assert!(rss_kib(u32::MAX).is_none() && cpu_secs(u32::MAX).is_none());
    }
}
