//! The fault schedule: `--fault AT_SECONDS=COMMAND` entries run with
//! `sh -c` at their time on the driver's clock, each start and end
//! recorded on that clock, and the fault window they make (first start to
//! last end, or `--window START..END`).

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::Clock;

/// One scheduled fault: a shell command started `at` seconds into the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub at: f64,
    pub command: String,
}

/// `AT_SECONDS=COMMAND`, e.g. `5=deploy/local/ctl.sh kill nats-1`.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let (at, command) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not AT_SECONDS=COMMAND"))?;
    let at: f64 = at
        .trim()
        .parse()
        .map_err(|_| format!("{at:?} is not a number of seconds"))?;
    if !(at.is_finite() && at >= 0.0) {
        return Err(format!("{at} is not a time in the run"));
    }
    let command = command.trim();
    if command.is_empty() {
        return Err(format!("{text:?} has no command"));
    }
    Ok(Fault {
        at,
        command: command.to_owned(),
    })
}

/// A span of the driver's clock, in seconds from the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub start: f64,
    pub end: f64,
}

impl Window {
    /// Whether `[from, to]` has any instant in the window.
    pub fn overlaps(&self, from: f64, to: f64) -> bool {
        from <= self.end && to >= self.start
    }
}

/// `START..END` in seconds, e.g. `5..12.5`.
pub fn parse_window(text: &str) -> Result<Window, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("{text:?} is not START..END"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{s:?} is not a number of seconds"))
    };
    let (start, end) = (number(a)?, number(b)?);
    if end < start {
        return Err(format!("{text:?} ends before it starts"));
    }
    Ok(Window { start, end })
}

/// What one fault command did, on the driver's clock.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRun {
    pub at: f64,
    pub command: String,
    pub started: f64,
    /// `None` when the run ended before the command did.
    pub ended: Option<f64>,
    /// Its exit status (`None`: killed by a signal, or not ended).
    pub status: Option<i32>,
}

/// The fault window: `explicit` when given, else from the first fault's
/// start to the last one's end (a fault still running counts until
/// `now`); `None` without faults.
pub fn window(runs: &[FaultRun], explicit: Option<Window>, now: f64) -> Option<Window> {
    if explicit.is_some() {
        return explicit;
    }
    let start = runs.iter().map(|r| r.started).reduce(f64::min)?;
    let end = runs
        .iter()
        .map(|r| r.ended.unwrap_or(now))
        .reduce(f64::max)?;
    Some(Window { start, end })
}

/// The runs of a scenario's faults, in the order they started.
pub type Runs = Arc<Mutex<Vec<FaultRun>>>;

/// Runs one fault at its time: `sh -c COMMAND`, its output line by line
/// to stderr (the run's log) with the driver's time; its start and end go
/// into `runs` as they happen (a command cut short keeps its start).
pub async fn run_fault(clock: Clock, index: usize, fault: Fault, runs: Runs) {
    clock.sleep_until(fault.at).await;
    let started = clock.now();
    let slot = {
        let mut runs = runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.push(FaultRun {
            at: fault.at,
            command: fault.command.clone(),
            started,
            ended: None,
            status: None,
        });
        runs.len() - 1
    };
    eprintln!(
        "chaos: fault {index} +{started:.2}s start: {}",
        fault.command
    );
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&fault.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let status = match child {
        Ok(mut child) => {
            let out = child.stdout.take().map(|o| echo(clock, index, o));
            let err = child.stderr.take().map(|e| echo(clock, index, e));
            let status = child.wait().await;
            for echoing in [out, err].into_iter().flatten() {
                let _ = echoing.await;
            }
            match status {
                Ok(s) => s.code(),
                Err(e) => {
                    eprintln!("chaos: fault {index}: waiting for it failed: {e}");
                    None
                }
            }
        }
        Err(e) => {
            eprintln!("chaos: fault {index}: sh could not be started: {e}");
            None
        }
    };
    let ended = clock.now();
    eprintln!(
        "chaos: fault {index} +{ended:.2}s end (status {}, {:.2} s)",
        status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        ended - started
    );
    let mut runs = runs.lock().unwrap_or_else(|p| p.into_inner());
    runs[slot].ended = Some(ended);
    runs[slot].status = status;
}

fn echo(
    clock: Clock,
    index: usize,
    from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("chaos: fault {index} +{:.2}s | {line}", clock.now());
        }
    })
}

/// How long to wait for fault commands still running when the logins are
/// done, before recording them as not ended.
pub const FAULT_GRACE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_keep_equals_signs_in_the_command() {
        assert_eq!(
            parse_fault("5=ctl.sh kill nats-1").unwrap(),
            Fault {
                at: 5.0,
                command: "ctl.sh kill nats-1".into()
            }
        );
        let f = parse_fault(" 2.5 = X=1 sh -c 'echo a=b' ").unwrap();
        assert_eq!((f.at, f.command.as_str()), (2.5, "X=1 sh -c 'echo a=b'"));
        for bad in [
            "ctl.sh kill",
            "x=ctl.sh",
            "-1=true",
            "5=",
            "5=  ",
            "inf=true",
        ] {
            assert!(parse_fault(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn windows_parse_and_overlap() {
        let w = parse_window("5..12.5").unwrap();
        assert_eq!(
            w,
            Window {
                start: 5.0,
                end: 12.5
            }
        );
        assert!(w.overlaps(4.0, 5.0), "touching the start");
        assert!(w.overlaps(12.5, 13.0), "touching the end");
        assert!(w.overlaps(1.0, 20.0), "spanning it");
        assert!(w.overlaps(6.0, 7.0), "inside");
        assert!(!w.overlaps(1.0, 4.99));
        assert!(!w.overlaps(12.51, 14.0));
        for bad in ["5", "5..", "..5", "9..5", "a..b", "-1..3"] {
            assert!(parse_window(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_window_runs_from_the_first_start_to_the_last_end() {
        let run = |started: f64, ended: Option<f64>| FaultRun {
            at: started,
            command: "true".into(),
            started,
            ended,
            status: Some(0),
        };
        assert_eq!(window(&[], None, 30.0), None);
        let runs = [
            run(12.0, Some(14.0)),
            run(5.0, Some(5.1)),
            run(8.0, Some(20.0)),
        ];
        assert_eq!(
            window(&runs, None, 30.0),
            Some(Window {
                start: 5.0,
                end: 20.0
            })
        );
        // A command that has not ended counts until now.
        let runs = [run(5.0, Some(5.1)), run(9.0, None)];
        assert_eq!(
            window(&runs, None, 30.0),
            Some(Window {
                start: 5.0,
                end: 30.0
            })
        );
        // An explicit window wins, with or without faults.
        let explicit = Window {
            start: 1.0,
            end: 2.0,
        };
        assert_eq!(window(&runs, Some(explicit), 30.0), Some(explicit));
        assert_eq!(window(&[], Some(explicit), 30.0), Some(explicit));
    }

    #[tokio::test]
    async fn a_fault_runs_at_its_time_and_its_end_is_recorded() {
        let clock = Clock::start();
        let runs = Runs::default();
        let fault = |command: &str| Fault {
            at: 0.05,
            command: command.into(),
        };
        run_fault(
            clock,
            0,
            fault("echo out; echo err >&2; sleep 0.1; exit 3"),
            runs.clone(),
        )
        .await;
        let run = runs.lock().unwrap()[0].clone();
        assert!(run.started >= 0.05, "started at {}", run.started);
        let ended = run.ended.unwrap();
        assert!(ended - run.started >= 0.1, "{run:?}");
        assert_eq!(run.status, Some(3));
    }
}
