//! Readings taken from outside the services under test: CPU time and RSS of
//! processes (`/proc/PID/stat`, `/proc/PID/status`), HAProxy's counters
//! (its stats page as CSV: bytes and requests per frontend and backend),
//! and latency summaries (percentiles, the peers' bucketed histogram).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use qrlogin_client::http::Pool;
use serde_json::{json, Value};

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`; 100 on
/// every Linux this runs on).
const CLK_TCK: f64 = 100.0;

/// User + system CPU time of a process so far, ms (`None`: gone).
pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields start after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000.0 / CLK_TCK)
}

/// Resident set size of a process, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `/proc/loadavg`'s first three figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Sum of one column of HAProxy's stats over rows matching `(pxname,
/// svname)` on every stats address, e.g. `("www", "FRONTEND", "bin")`.
pub type Counters = BTreeMap<(String, String, String), f64>;

/// Every numeric cell of every stats page, summed over the pages.
pub async fn haproxy(stats: &[SocketAddr]) -> anyhow::Result<Counters> {
    let mut out = Counters::new();
    for addr in stats {
        let pool = Pool::new(*addr, None, 0);
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            pool.request("GET", "/;csv", &[], None, || {}),
        )
        .await??;
        let text = String::from_utf8_lossy(&r.body);
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() < 2 {
                continue;
            }
            for (name, cell) in header.iter().zip(&cells).skip(2) {
                if let Ok(v) = cell.parse::<f64>() {
                    *out.entry((cells[0].into(), cells[1].into(), (*name).into()))
                        .or_default() += v;
                }
            }
        }
    }
    Ok(out)
}

/// `after - before` of one cell (0 when absent).
pub fn delta(before: &Counters, after: &Counters, px: &str, sv: &str, col: &str) -> f64 {
    let key = (px.to_owned(), sv.to_owned(), col.to_owned());
    after.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `{p50, p95, p99, max, mean}` of latencies in ms (nulls when empty).
pub fn summary(sorted: &[f64]) -> Value {
    let mean = (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64);
    json!({
        "p50": percentile(sorted, 50.0),
        "p95": percentile(sorted, 95.0),
        "p99": percentile(sorted, 99.0),
        "max": sorted.last(),
        "mean": mean,
    })
}

/// The peers' histogram format (tools/bench/peers/README.md "Output"):
/// bucket b holds (0.01·1.05^b, 0.01·1.05^(b+1)] ms; non-empty buckets only.
pub fn histogram(sorted: &[f64]) -> Value {
    const BASE: f64 = 0.01;
    const RATIO: f64 = 1.05;
    let mut buckets: BTreeMap<i64, u64> = BTreeMap::new();
    for &ms in sorted {
        let b = if ms <= BASE {
            0
        } else {
            ((ms / BASE).ln() / RATIO.ln()).ceil() as i64 - 1
        };
        *buckets.entry(b.max(0)).or_default() += 1;
    }
    let rows: Vec<Value> = buckets
        .into_iter()
        .map(|(b, n)| json!([BASE * RATIO.powi(b as i32 + 1), n]))
        .collect();
    json!({ "base_ms": BASE, "ratio": RATIO, "buckets": rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_histogram() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
        let h = histogram(&v);
        let total: u64 = h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b[1].as_u64().unwrap())
            .sum();
        assert_eq!(total, 100);
        // Every value lies at or below its bucket's upper bound.
        let last = h["buckets"].as_array().unwrap().last().unwrap()[0]
            .as_f64()
            .unwrap();
        assert!((100.0..=105.0).contains(&last), "{last}");
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(cpu_ms(me).is_some());
        assert!(rss_kib(me).unwrap() > 0);
    }
}
