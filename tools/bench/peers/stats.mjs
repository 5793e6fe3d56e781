// Figures shared by the Node harnesses, computed the same way as the Rust
// side (tools/bench/peers/sse-load): nearest-rank percentiles from the raw
// samples and the bucketed latency histogram documented in README.md.
import { readFileSync } from 'node:fs';

export const HIST_BASE_MS = 0.01;
export const HIST_RATIO = 1.05;

const round3 = (x) => Math.round(x * 1000) / 1000;

/** Nearest-rank percentile of sorted samples (p in 0..100). */
export function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1];
}

/** {"p50","p95","p99","max","mean"} in ms, 3 decimals, or nulls when empty. */
export function latencySummary(samples) {
  const s = Float64Array.from(samples).sort();
  if (s.length === 0) return { p50: null, p95: null, p99: null, max: null, mean: null };
  let sum = 0;
  for (const x of s) sum += x;
  return {
    p50: round3(percentile(s, 50)),
    p95: round3(percentile(s, 95)),
    p99: round3(percentile(s, 99)),
    max: round3(s[s.length - 1]),
    mean: round3(sum / s.length),
  };
}

/**
 * Log-bucketed histogram: bucket b holds samples in
 * (base*ratio^b, base*ratio^(b+1)] ms; samples at or under base go to the
 * first bucket. Only non-empty buckets are listed, as [upper_ms, count].
 */
export function latencyHistogram(samples) {
  const counts = new Map();
  for (const ms of samples) {
    let b = 0;
    if (ms > HIST_BASE_MS) b = Math.ceil(Math.log(ms / HIST_BASE_MS) / Math.log(HIST_RATIO) - 1e-9) - 1;
    if (b < 0) b = 0;
    counts.set(b, (counts.get(b) || 0) + 1);
  }
  const buckets = [...counts.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([b, c]) => [Number((HIST_BASE_MS * HIST_RATIO ** (b + 1)).toPrecision(4)), c]);
  return { base_ms: HIST_BASE_MS, ratio: HIST_RATIO, buckets };
}

/** Resident set size of a process in KiB (VmRSS), or null when it is gone. */
export function rssKib(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Load average (1, 5, 15 min) from /proc/loadavg. */
export function loadAverage() {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    return null;
  }
}

/** Adds one to errors[key]. */
export function count(errors, key, n = 1) {
  errors[key] = (errors[key] || 0) + n;
}

/** Merges counters of b into a. */
export function mergeCounts(a, b) {
  for (const [k, v] of Object.entries(b || {})) count(a, k, v);
  return a;
}

/** Monotonic clock in ns (CLOCK_MONOTONIC: the same in every process of the machine). */
export const nowNs = () => process.hrtime.bigint();
