//! Server-Sent Events: pushes as the event stream's bytes. `retry:` first,
//! one event per snapshot (`id` = version, `event` = state, `data` = the
//! JSON), a comment per keep-alive, and at drain a jittered `retry:`
//! before the end. When to push what is `delivery::push`'s.
//!
//! The stream is a plain state machine polled by the connection's task
//! (the front server's direct path, or hyper): no task per connection.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    http::{header, HeaderValue},
    response::{
        sse::{Event, Sse},
        IntoResponse, Response,
    },
};
use futures::Stream;

use crate::{
    delivery::{Delivery, Leave, Push},
    domain::Snapshot,
};

/// What every SSE stream of this node shares: its settings and the node
/// name the snapshots carry.
pub struct Endpoint {
    pub node: String,
    /// Comment interval (`QRLOGIN_SSE_HEARTBEAT`).
    pub heartbeat: Duration,
    /// Reconnect delay sent first (`QRLOGIN_SSE_RETRY`); at drain the
    /// delivery's jittered one is sent instead.
    pub retry: Duration,
}

/// The `200` with the event stream of `delivery`.
pub fn response(endpoint: Arc<Endpoint>, mut delivery: Delivery) -> Response {
    delivery.keep_alive(Some(endpoint.heartbeat));
    let stream = EventStream {
        phase: Phase::Start,
        endpoint,
        delivery,
    };
    let mut response = Sse::new(stream.into_stream()).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

enum Phase {
    Start,
    Running,
    Done,
}

struct EventStream {
    phase: Phase,
    endpoint: Arc<Endpoint>,
    delivery: Delivery,
}

/// The event of one snapshot.
pub fn snapshot_event(s: &Arc<Snapshot>, node: &str) -> Event {
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
        match self.phase {
            Phase::Done => return None,
            Phase::Start => {
                self.phase = Phase::Running;
                return Some(Event::default().retry(self.endpoint.retry));
            }
            Phase::Running => {}
        }
        match self.delivery.next_push().await {
            Push::Snapshot(s) => Some(snapshot_event(&s, &self.endpoint.node)),
            Push::KeepAlive => Some(Event::default().comment("heartbeat")),
            Push::Leave(Leave::Finished) => None,
            Push::Leave(Leave::Draining { reconnect_after }) => {
                self.phase = Phase::Done;
                Some(Event::default().retry(reconnect_after))
            }
        }
    }
}
