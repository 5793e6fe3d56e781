//! The rows of a results.json (tools/bench/peers/README.md "Output"): what
//! the charts read from each, and the latency CDF of a row from its
//! bucketed histogram or its raw samples. Unknown fields are ignored and
//! every figure is optional, so one file can hold qrlogin's rows and the
//! peers' rows as each harness writes them.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub system: String,
    #[serde(default)]
    pub variant: Option<String>,
    pub transport: String,
    #[serde(default)]
    pub rate: Option<f64>,
    #[serde(default)]
    pub waiting: Option<f64>,
    #[serde(default)]
    pub latency_histogram: Option<Histogram>,
    /// Raw latencies in ms (any order), instead of or beside the histogram.
    #[serde(default)]
    pub latency_samples_ms: Option<Vec<f64>>,
    #[serde(default)]
    pub bytes_per_login: Option<f64>,
    #[serde(default)]
    pub bytes_per_event: Option<f64>,
    #[serde(default)]
    pub memory_per_conn_kib: Option<f64>,
    #[serde(default)]
    pub requests_per_login: Option<f64>,
    #[serde(default)]
    pub http_requests_per_wait: Option<f64>,
    #[serde(default)]
    pub delivered: Option<f64>,
    #[serde(default)]
    pub expected: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Histogram {
    pub base_ms: f64,
    pub ratio: f64,
    /// `[upper_ms, count]`, ascending.
    pub buckets: Vec<(f64, f64)>,
}

/// Reads a results.json: a JSON array of rows.
pub fn parse(text: &str) -> Result<Vec<Row>, serde_json::Error> {
    serde_json::from_str(text)
}

impl Row {
    /// "qrlogin sse", "pushpin sse (stock)", "socketio ws (redis-adapter)".
    pub fn label(&self) -> String {
        match self.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{} {} ({v})", self.system, self.transport),
            _ => format!("{} {}", self.system, self.transport),
        }
    }

    /// The latency CDF as (ms, fraction ≤ ms) steps, ascending; empty when
    /// the row has no latency data.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        if let Some(h) = &self.latency_histogram {
            let total: f64 = h.buckets.iter().map(|b| b.1).sum();
            if total > 0.0 {
                let mut out = Vec::with_capacity(h.buckets.len() * 2 + 1);
                let mut seen = 0.0;
                for &(upper, count) in &h.buckets {
                    let lower = (upper / h.ratio).max(h.base_ms / h.ratio);
                    out.push((lower, seen / total));
                    seen += count;
                    out.push((upper, seen / total));
                }
                return out;
            }
        }
        if let Some(samples) = &self.latency_samples_ms {
            let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
            s.sort_by(f64::total_cmp);
            let n = s.len() as f64;
            return s
                .iter()
                .enumerate()
                .map(|(i, x)| (*x, (i + 1) as f64 / n))
                .collect();
        }
        Vec::new()
    }

    /// Bytes on the wire for one login (or one wait and its event, for the
    /// peers): the row's own figure, else its event bytes.
    pub fn bytes_for_login(&self) -> Option<f64> {
        self.bytes_per_login.or(self.bytes_per_event)
    }

    pub fn requests(&self) -> Option<f64> {
        self.requests_per_login.or(self.http_requests_per_wait)
    }
}

/// Rows grouped by rate (rows without a rate are left out), rates ascending.
pub fn by_rate(rows: &[Row]) -> BTreeMap<u64, Vec<&Row>> {
    let mut out: BTreeMap<u64, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        if let Some(rate) = r.rate {
            out.entry(rate.round() as u64).or_default().push(r);
        }
    }
    out
}

/// One value per label: the row with the highest rate wins (the figure
/// measured under the most load), in the order labels first appear.
pub fn one_per_label(rows: &[Row], value: impl Fn(&Row) -> Option<f64>) -> Vec<(String, f64)> {
    let mut order: Vec<String> = Vec::new();
    let mut best: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in rows {
        let Some(v) = value(r).filter(|v| v.is_finite()) else {
            continue;
        };
        let label = r.label();
        let rate = r.rate.unwrap_or(0.0);
        match best.get(&label) {
            Some((old_rate, _)) if *old_rate > rate => {}
            _ => {
                if !best.contains_key(&label) {
                    order.push(label.clone());
                }
                best.insert(label, (rate, v));
            }
        }
    }
    order
        .into_iter()
        .map(|l| {
            let v = best[&l].1;
            (l, v)
        })
        .collect()
}
