//! Server-Sent Events: `retry:` first, then one event per newer snapshot,
//! a comment heartbeat, and the end after a final state or at drain.
//!
//! The stream is a plain state machine polled by hyper's connection task:
//! no task per connection, one heartbeat timer, one watch receiver.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Path, RawQuery, State},
    http::{header, HeaderMap, HeaderValue},
    response::{
        sse::{Event, Sse},
        IntoResponse, Response,
    },
};
use futures::Stream;
use rand::Rng;
use time::OffsetDateTime;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{extract, AppState};
use crate::{
    delivery::Watcher,
    domain::Snapshot,
    error::ApiError,
    metrics::{ConnectionGuard, Transport},
    shutdown::DrainListener,
};

/// Time from auth's commit to now, for event-sourced snapshots.
pub fn delay(s: &Snapshot) -> Option<Duration> {
    let changed = s.changed_at?;
    (OffsetDateTime::now_utc() - changed).try_into().ok()
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = extract::session_id(&id)?;
    let since = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(v) if !v.trim().is_empty() => Some(extract::version(v, "Last-Event-ID")?),
        _ => extract::query_value(query.as_deref(), "since")
            .map(|v| extract::version(v, "since"))
            .transpose()?,
    };
    let secret = extract::browser_secret(&headers, &id)?;
    let watcher = state.watches.watch(&id, &secret, since).await?;
    let period = state.config.sse_heartbeat;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = EventStream {
        phase: Phase::Start,
        _open: state.metrics.connection(Transport::Sse),
        drain: state.drain.listener(),
        state,
        watcher,
        heartbeat,
    };
    let mut response = Sse::new(stream.into_stream()).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

enum Phase {
    Start,
    Running,
    Done,
}

struct EventStream {
    phase: Phase,
    state: AppState,
    watcher: Watcher,
    heartbeat: Interval,
    drain: DrainListener,
    /// Counts this stream in the connections gauge while it lives.
    _open: ConnectionGuard,
}

fn snapshot_event(s: &Arc<Snapshot>, node: &str) -> Event {
    Event::default()
        .id(s.version.to_string())
        .event(s.state.as_str())
        .data(s.to_json_string(node))
}

impl EventStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut me| async move {
            let event = me.step().await?;
            Some((Ok(event), me))
        })
    }

    async fn step(&mut self) -> Option<Event> {
        let state = self.state.clone();
        match self.phase {
            Phase::Done => None,
            Phase::Start => {
                self.phase = Phase::Running;
                Some(Event::default().retry(state.config.sse_retry))
            }
            Phase::Running => {
                tokio::select! {
                    biased;
                    _ = self.drain.started() => {
                        self.phase = Phase::Done;
                        let base = state.config.sse_retry;
                        let jittered = base.mul_f64(rand::rng().random_range(0.5..2.0));
                        Some(Event::default().retry(jittered))
                    }
                    news = self.watcher.next(&state.metrics) => {
                        let s = news?;
                        if s.state.is_final() {
                            self.phase = Phase::Done;
                        }
                        state.metrics.delivered(Transport::Sse, delay(&s));
                        Some(snapshot_event(&s, &state.node))
                    }
                    _ = self.heartbeat.tick() => Some(Event::default().comment("heartbeat")),
                }
            }
        }
    }
}
