//! Figures computed the same way as the Node harness (`stats.mjs`):
//! nearest-rank percentiles, the log-bucketed latency histogram of
//! `README.md`, RSS from `/proc`, and process trees.

use std::{
    collections::{BTreeMap, HashMap},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

pub const HIST_BASE_MS: f64 = 0.01;
pub const HIST_RATIO: f64 = 1.05;

/// Wall clock in ns since the Unix epoch (the same clock in every process).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// p50/p95/p99/max/mean in ms (3 decimals) of samples in ms.
pub fn summary(samples_ms: &[f64]) -> Summary {
    let mut s = samples_ms.to_vec();
    s.sort_by(f64::total_cmp);
    let mean = (!s.is_empty()).then(|| round3(s.iter().sum::<f64>() / s.len() as f64));
    Summary {
        p50: percentile(&s, 50.0).map(round3),
        p95: percentile(&s, 95.0).map(round3),
        p99: percentile(&s, 99.0).map(round3),
        max: s.last().copied().map(round3),
        mean,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Histogram {
    pub base_ms: f64,
    pub ratio: f64,
    /// Non-empty buckets as `[upper_ms, count]`, ascending.
    pub buckets: Vec<(f64, u64)>,
}

/// Bucket b holds samples in (base·ratio^b, base·ratio^(b+1)] ms; samples
/// at or under base go to bucket 0.
pub fn histogram(samples_ms: &[f64]) -> Histogram {
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for &ms in samples_ms {
        let mut b = 0i64;
        if ms > HIST_BASE_MS {
            b = ((ms / HIST_BASE_MS).ln() / HIST_RATIO.ln() - 1e-9).ceil() as i64 - 1;
        }
        *counts.entry(b.max(0)).or_default() += 1;
    }
    let buckets = counts
        .into_iter()
        .map(|(b, c)| (four_digits(HIST_BASE_MS * HIST_RATIO.powi(b as i32 + 1)), c))
        .collect();
    Histogram {
        base_ms: HIST_BASE_MS,
        ratio: HIST_RATIO,
        buckets,
    }
}

/// Rounds to 4 significant digits (as JavaScript's `toPrecision(4)`).
fn four_digits(x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// VmRSS of a process in KiB, None when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `root` and every process below it.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces; fields resume after its ')'.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse().ok())
            {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        let mut kids: Vec<u32> = parent
            .iter()
            .filter(|(_, pp)| **pp == p)
            .map(|(c, _)| *c)
            .collect();
        kids.sort_unstable();
        out.extend(kids);
        i += 1;
    }
    out
}

/// RSS (KiB) of every process in the trees of `roots`, by command name
/// (numbered when a name repeats), and their sum.
pub fn tree_rss(roots: &[(String, u32)]) -> (BTreeMap<String, u64>, u64) {
    let mut by_name = BTreeMap::new();
    let mut total = 0;
    for (_, root) in roots {
        for pid in tree(*root) {
            let (Some(name), Some(rss)) = (comm(pid), rss_kib(pid)) else {
                continue;
            };
            let mut key = name.clone();
            let mut n = 1;
            while by_name.contains_key(&key) {
                n += 1;
                key = format!("{name}#{n}");
            }
            by_name.insert(key, rss);
            total += rss;
        }
    }
    (by_name, total)
}

/// Load average (1, 5, 15 minutes).
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        let sum = summary(&s);
        assert_eq!(sum.p50, Some(50.0));
        assert_eq!(sum.p95, Some(95.0));
        assert_eq!(sum.p99, Some(99.0));
        assert_eq!(sum.max, Some(100.0));
        assert_eq!(summary(&[]).p50, None);
    }

    #[test]
    fn histogram_buckets_hold_their_samples() {
        let h = histogram(&[0.001, 0.01, 1.0, 1.0, 20.0]);
        assert_eq!(h.buckets.iter().map(|b| b.1).sum::<u64>(), 5);
        assert_eq!(h.buckets[0], (0.0105, 2));
        for (upper, _) in &h.buckets[1..] {
            assert!(*upper > 0.0105);
        }
        // 1.0 ms lies in its bucket: lower edge < 1.0 <= upper edge.
        let one = h.buckets.iter().find(|b| b.1 == 2 && b.0 > 0.5).unwrap().0;
        assert!(one >= 1.0 && one / HIST_RATIO < 1.0, "{one}");
    }

    #[test]
    fn own_process_is_in_its_tree_and_has_rss() {
        let me = std::process::id();
        assert_eq!(tree(me)[0], me);
        assert!(rss_kib(me).unwrap() > 0);
    }
}
