//! A scenario's figures from its login records and fault runs: counts by
//! verdict, confirm→event latency inside and outside the fault window,
//! recovery after each fault, and the one line people read.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    record::{LoginRecord, Verdict},
    schedule::{FaultRun, Window},
};
use crate::compare::probe::percentile;

/// Latency figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// p50, p99 and max of unsorted milliseconds; `None` when empty.
pub fn latency(mut ms: Vec<f64>) -> Option<Latency> {
    ms.sort_by(f64::total_cmp);
    Some(Latency {
        count: ms.len(),
        p50_ms: percentile(&ms, 50.0)?,
        p99_ms: percentile(&ms, 99.0)?,
        max_ms: *ms.last()?,
    })
}

/// The confirm→event latency of a login (ms): from the phone starting to
/// write its first confirm to CONFIRMED on the browser's push.
pub fn confirm_to_event_ms(r: &LoginRecord) -> Option<f64> {
    Some((r.confirmed_pushed? - r.confirm_sent?) * 1000.0)
}

/// Confirm→event latencies split by whether `[confirm sent, event]`
/// touches the fault window: `(inside, outside)`.
pub fn split_by_window(records: &[LoginRecord], window: Option<Window>) -> (Vec<f64>, Vec<f64>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for r in records {
        let (Some(ms), Some(sent), Some(pushed)) =
            (confirm_to_event_ms(r), r.confirm_sent, r.confirmed_pushed)
        else {
            continue;
        };
        match window {
            Some(w) if w.overlaps(sent, pushed) => inside.push(ms),
            _ => outside.push(ms),
        }
    }
    (inside, outside)
}

/// A whole login's time (ms): from its start to the redeem's answer.
pub fn login_ms(r: &LoginRecord) -> Option<f64> {
    Some((r.redeemed? - r.started) * 1000.0)
}

/// Whole-login times of the logins that lived entirely outside the
/// window (from their start to their end or deadline).
pub fn logins_outside(records: &[LoginRecord], window: Option<Window>) -> Vec<f64> {
    records
        .iter()
        .filter(|r| window.is_none_or(|w| !w.overlaps(r.started, r.redeemed.unwrap_or(r.deadline))))
        .filter_map(login_ms)
        .collect()
}

/// How long logins take to behave normally again: a span of this many
/// seconds of login starts in which every login completed within the
/// normal p99s.
pub const NORMAL_SPAN: f64 = 2.0;

/// The p99s that count as normal: of confirm→event, and of whole logins
/// (a login whose create waited for a cluster to come back has a normal
/// confirm→event, and not a normal login).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Normal {
    pub confirm_to_event_ms: f64,
    pub login_ms: f64,
}

impl Normal {
    /// The limits derived from normal p99s: twice each, and at least 5 ms
    /// above it (the few samples of a quiet second are noisy).
    pub fn from_p99s(confirm_to_event_ms: f64, login_ms: f64) -> Self {
        let limit = |p99: f64| (2.0 * p99).max(p99 + 5.0);
        Self {
            confirm_to_event_ms: limit(confirm_to_event_ms),
            login_ms: limit(login_ms),
        }
    }
}

/// Recovery after one fault, in seconds from its command's start (the
/// signal follows within milliseconds; the command's end can come seconds
/// later, e.g. while a killed process waits to be reaped).
#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub fault: usize,
    pub command: String,
    /// The driver time recovery is counted from.
    pub from: f64,
    /// To the redeem of the first login started after `from`.
    pub to_first_login_s: Option<f64>,
    /// To the first [`NORMAL_SPAN`] of login starts that all completed
    /// with p99s within the [`Normal`] limits.
    pub to_normal_p99_s: Option<f64>,
}

/// Recovery after a fault that started at `start` (records sorted by
/// their start): to the first completed login, and to normal p99s.
pub fn recovery(
    records: &[LoginRecord],
    start: f64,
    limits: Option<Normal>,
) -> (Option<f64>, Option<f64>) {
    let after: Vec<&LoginRecord> = records.iter().filter(|r| r.started >= start).collect();
    let first = after
        .iter()
        .filter(|r| r.verdict() == Verdict::Completed)
        .filter_map(|r| r.redeemed)
        .reduce(f64::min)
        .map(|t| t - start);
    let normal = limits.and_then(|limits| {
        let last_start = after.last()?.started;
        after.iter().enumerate().find_map(|(i, l)| {
            // A span cut short by the end of the run proves nothing.
            if l.started + NORMAL_SPAN > last_start {
                return None;
            }
            let span: Vec<&&LoginRecord> = after[i..]
                .iter()
                .take_while(|r| r.started < l.started + NORMAL_SPAN)
                .collect();
            let all_completed = span.iter().all(|r| r.verdict() == Verdict::Completed);
            let p99 = |f: fn(&LoginRecord) -> Option<f64>| {
                latency(span.iter().filter_map(|r| f(r)).collect()).map(|l| l.p99_ms)
            };
            let within = p99(confirm_to_event_ms).is_some_and(|p| p <= limits.confirm_to_event_ms)
                && p99(login_ms).is_some_and(|p| p <= limits.login_ms);
            (all_completed && within).then_some(l.started - start)
        })
    });
    (first, normal)
}

/// Counts by verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub started: usize,
    pub completed: usize,
    pub outcome: usize,
    pub lost: usize,
    pub duplicated: usize,
}

impl Counts {
    fn add(&mut self, v: Verdict) {
        self.started += 1;
        match v {
            Verdict::Completed => self.completed += 1,
            Verdict::Outcome => self.outcome += 1,
            Verdict::Lost => self.lost += 1,
            Verdict::Duplicated => self.duplicated += 1,
        }
    }
}

/// A scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub counts: Counts,
    pub by_transport: BTreeMap<&'static str, Counts>,
    /// How the logins that did not complete ended, with counts.
    pub ends: BTreeMap<String, usize>,
    pub window: Option<Window>,
    pub in_window: Option<Latency>,
    pub outside: Option<Latency>,
    /// Whole logins that lived outside the window (start to redeem).
    pub logins_outside: Option<Latency>,
    /// The limits of "normal" for recovery, from the confirm→event p99
    /// given (else outside the window) and the whole-login p99 outside it.
    pub normal_limits: Option<Normal>,
    pub recovery: Vec<Recovery>,
    pub reconnects: u64,
    pub retries: u64,
}

impl Summary {
    pub fn new(
        scenario: &str,
        records: &mut [LoginRecord],
        faults: &[FaultRun],
        window: Option<Window>,
        normal_p99_ms: Option<f64>,
    ) -> Self {
        records.sort_by(|a, b| a.started.total_cmp(&b.started));
        let mut counts = Counts::default();
        let mut by_transport: BTreeMap<&'static str, Counts> = BTreeMap::new();
        let mut ends: BTreeMap<String, usize> = BTreeMap::new();
        for r in records.iter() {
            let v = r.verdict();
            counts.add(v);
            by_transport.entry(r.transport).or_default().add(v);
            if v != Verdict::Completed {
                let label = match v {
                    Verdict::Duplicated => {
                        format!("duplicated: {}", r.duplicate_reason().unwrap_or_default())
                    }
                    _ => r.end_label(),
                };
                *ends
                    .entry(format!("{} ({})", label, r.transport))
                    .or_default() += 1;
            }
        }
        let (inside, outside) = split_by_window(records, window);
        let (in_window, outside) = (latency(inside), latency(outside));
        let logins_outside = latency(logins_outside(records, window));
        let normal_limits = normal_p99_ms
            .or(outside.map(|l| l.p99_ms))
            .zip(logins_outside.map(|l| l.p99_ms))
            .map(|(c, l)| Normal::from_p99s(c, l));
        let recovery = faults
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let from = f.started;
                let (first, normal) = recovery(records, from, normal_limits);
                Recovery {
                    fault: i,
                    command: f.command.clone(),
                    from,
                    to_first_login_s: first,
                    to_normal_p99_s: normal,
                }
            })
            .collect();
        Self {
            scenario: scenario.to_owned(),
            counts,
            by_transport,
            ends,
            window,
            in_window,
            outside,
            logins_outside,
            normal_limits,
            recovery,
            reconnects: records.iter().map(|r| u64::from(r.reconnects)).sum(),
            retries: records.iter().map(|r| u64::from(r.retries)).sum(),
        }
    }

    pub fn passed(&self) -> bool {
        self.counts.lost == 0 && self.counts.duplicated == 0
    }

    /// The slowest recovery over the faults: `None` without faults,
    /// `Some(None)` when some fault was never recovered from.
    fn worst(&self, pick: impl Fn(&Recovery) -> Option<f64>) -> Option<Option<f64>> {
        if self.recovery.is_empty() {
            return None;
        }
        Some(
            self.recovery
                .iter()
                .map(&pick)
                .try_fold(0.0f64, |m, r| r.map(|r| m.max(r))),
        )
    }

    /// `chaos NAME: started …, completed …, outcome …, lost …, duplicated
    /// …, confirm→event p50 … p99 … in window, p50 … p99 … outside,
    /// recovery … to first login, … to normal p99`.
    pub fn line(&self) -> String {
        let c = &self.counts;
        let lat = |l: Option<Latency>| match l {
            Some(l) => format!("p50 {} p99 {}", ms(l.p50_ms), ms(l.p99_ms)),
            None => "p50 n/a p99 n/a".into(),
        };
        let secs = |r: Option<Option<f64>>| match r {
            None => "n/a".to_owned(),
            Some(None) => "never".to_owned(),
            Some(Some(s)) => format!("{s:.1} s"),
        };
        format!(
            "chaos {}: started {}, completed {}, outcome {}, lost {}, duplicated {}, confirm→event {} in window, {} outside, recovery {} to first login, {} to normal p99",
            self.scenario,
            c.started,
            c.completed,
            c.outcome,
            c.lost,
            c.duplicated,
            lat(self.in_window),
            lat(self.outside),
            secs(self.worst(|r| r.to_first_login_s)),
            secs(self.worst(|r| r.to_normal_p99_s)),
        )
    }
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::record::End;

    /// A login started at `t` whose confirm took `ms` to be pushed.
    fn done(t: f64, ms: f64) -> LoginRecord {
        LoginRecord {
            started: t,
            confirm_sent: Some(t + 0.01),
            confirmed_pushed: Some(t + 0.01 + ms / 1000.0),
            redeemed: Some(t + 0.02 + ms / 1000.0),
            tokens: vec!["x".into()],
            end: End::Redeemed,
            transport: "sse",
            ..Default::default()
        }
    }

    fn hung(t: f64) -> LoginRecord {
        LoginRecord {
            started: t,
            end: End::Hung {
                step: "CONFIRMED push",
            },
            transport: "ws",
            ..Default::default()
        }
    }

    #[test]
    fn latency_percentiles_are_nearest_rank() {
        let l = latency((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(latency(vec![]), None);
        assert_eq!(latency(vec![3.0]).unwrap().p99_ms, 3.0);
    }

    #[test]
    fn latencies_are_classified_by_the_window_they_touch() {
        let w = Window {
            start: 10.0,
            end: 12.0,
        };
        let records = [
            done(5.0, 1.0),
            // Confirmed before the window, pushed inside it.
            done(9.985, 20.0),
            done(11.0, 300.0),
            done(13.0, 2.0),
            hung(11.5),
        ];
        let (inside, outside) = split_by_window(&records, Some(w));
        assert_eq!(inside.len(), 2);
        assert_eq!(outside.len(), 2);
        let (inside, outside) = split_by_window(&records, None);
        assert_eq!((inside.len(), outside.len()), (0, 4));
    }

    #[test]
    fn recovery_counts_from_the_fault_to_the_first_login_and_to_normal_latency() {
        // 10 logins a second; a fault at 5.0 s: logins started in the next
        // 1.5 s hang, then latencies are high until 8.0 s, then normal.
        let mut records = Vec::new();
        for i in 0..150 {
            let t = f64::from(i) / 10.0;
            records.push(if (5.0..6.5).contains(&t) {
                hung(t)
            } else if (6.5..8.0).contains(&t) {
                done(t, 50.0)
            } else {
                done(t, 1.0)
            });
        }
        let limits = Normal::from_p99s(1.0, 21.0);
        assert_eq!((limits.confirm_to_event_ms, limits.login_ms), (6.0, 42.0));
        let (first, normal) = recovery(&records, 5.0, Some(limits));
        assert!((first.unwrap() - 1.57).abs() < 1e-9, "{first:?}");
        assert!((normal.unwrap() - 3.0).abs() < 1e-9, "{normal:?}");
        // Without limits only the first login is known.
        assert_eq!(recovery(&records, 5.0, None).1, None);
        // A fault nobody noticed: recovered at once.
        let (first, normal) = recovery(&records, 9.95, Some(limits));
        assert!(first.unwrap() < 0.1 && normal.unwrap() < 0.1);
        // Never normal again before the end of the run.
        let (_, normal) = recovery(&records, 5.0, Some(Normal::from_p99s(0.1, 0.1)));
        assert_eq!(normal, None);
    }

    #[test]
    fn a_login_that_waited_for_its_create_is_not_normal_yet() {
        // After a fault at 5.0 s the logins started before 7.0 s wait for
        // their create until 7.0 s, then go through at normal speed.
        let records: Vec<LoginRecord> = (0..150)
            .map(|i| {
                let t = f64::from(i) / 10.0;
                let mut r = done(t, 1.0);
                if (5.0..7.0).contains(&t) {
                    let later = done(7.0, 1.0);
                    (r.confirm_sent, r.confirmed_pushed, r.redeemed) =
                        (later.confirm_sent, later.confirmed_pushed, later.redeemed);
                }
                r
            })
            .collect();
        let limits = Normal::from_p99s(1.0, 21.0);
        let (first, normal) = recovery(&records, 5.0, Some(limits));
        assert!((first.unwrap() - 2.021).abs() < 1e-9, "{first:?}");
        assert!((normal.unwrap() - 2.0).abs() < 1e-9, "{normal:?}");
        // Their confirm→event alone looked normal all along; their whole
        // time touches the window.
        let outside = logins_outside(
            &records,
            Some(Window {
                start: 5.0,
                end: 6.95,
            }),
        );
        assert_eq!(outside.len(), 150 - 20);
    }

    #[test]
    fn the_line_and_the_counts() {
        let mut records = vec![done(1.0, 1.0), done(2.0, 2.0), hung(3.0)];
        let mut redeemed_twice = done(4.0, 1.0);
        redeemed_twice.tokens.push("y".into());
        records.push(redeemed_twice);
        let faults = [FaultRun {
            at: 2.5,
            command: "kill".into(),
            started: 2.5,
            ended: Some(2.6),
            status: Some(0),
        }];
        let w = Some(Window {
            start: 2.5,
            end: 2.6,
        });
        let s = Summary::new("leader-kill", &mut records, &faults, w, None);
        assert_eq!(
            (
                s.counts.started,
                s.counts.completed,
                s.counts.outcome,
                s.counts.lost,
                s.counts.duplicated
            ),
            (4, 2, 0, 1, 1)
        );
        assert!(!s.passed());
        assert_eq!(s.by_transport["ws"].lost, 1);
        assert_eq!(s.ends["hung CONFIRMED push (ws)"], 1);
        assert_eq!(s.ends["duplicated: 2 different tokens (sse)"], 1);
        let line = s.line();
        assert!(
            line.starts_with("chaos leader-kill: started 4, completed 2, outcome 0, lost 1, duplicated 1, confirm→event p50 n/a p99 n/a in window, p50 1.0 ms p99 2.0 ms outside, recovery never to first login"),
            "{line}"
        );
        let none = Summary::new("none", &mut [done(1.0, 1.0)], &[], None, None);
        assert!(none.passed());
        assert!(
            none.line()
                .ends_with("recovery n/a to first login, n/a to normal p99"),
            "{}",
            none.line()
        );
    }
}
