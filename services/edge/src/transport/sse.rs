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
    config::{duration, invalid, ConfigError},
    delivery::{Delivery, Leave, Push},
    domain::Snapshot,
};

/// Settings of SSE (docs/configuration.md, "edge").
#[derive(Debug, Clone, clap::Args)]
pub struct SseSettings {
    /// Interval of heartbeat comments.
    #[arg(id = "sse-heartbeat", long = "sse-heartbeat", env = "QRLOGIN_SSE_HEARTBEAT", default_value = "15s", value_parser = duration)]
    pub heartbeat: Duration,
    /// Reconnect delay suggested first (`retry:`); at drain a jittered one
    /// around it (also the hint the other transports give at drain).
    #[arg(id = "sse-retry", long = "sse-retry", env = "QRLOGIN_SSE_RETRY", default_value = "2s", value_parser = duration)]
    pub retry: Duration,
}

impl SseSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (var, value) in [
            ("QRLOGIN_SSE_HEARTBEAT", self.heartbeat),
            ("QRLOGIN_SSE_RETRY", self.retry),
        ] {
            if value.is_zero() {
                return Err(invalid(var, "must be greater than zero"));
            }
        }
        Ok(())
    }
}

/// What every SSE stream of this node shares: its settings and the node
/// name the snapshots carry.
pub struct Endpoint {
    pub node: String,
    pub settings: SseSettings,
}

/// The `200` with the event stream of `delivery`.
pub fn response(endpoint: Arc<Endpoint>, mut delivery: Delivery) -> Response {
    delivery.keep_alive(Some(endpoint.settings.heartbeat));
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
                return Some(Event::default().retry(self.endpoint.settings.retry));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{delivery::push::tests::fixture, domain::LoginState};
    use axum::body::{Body, HttpBody};
    use tokio::time::Instant;

    /// The next chunk of the body, as text.
    async fn chunk(body: &mut Body) -> Option<String> {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *body).poll_frame(cx))
            .await?
            .unwrap();
        Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_events_heartbeats_and_the_end_as_bytes() {
        let f = fixture();
        f.commit(1, LoginState::Pending);
        let endpoint = Arc::new(Endpoint {
            node: "edge-t".into(),
            settings: SseSettings {
                heartbeat: Duration::from_secs(15),
                retry: Duration::from_secs(2),
            },
        });
        let first = response(endpoint.clone(), f.delivery(None).await);
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache");
        let mut body = first.into_body();
        assert_eq!(chunk(&mut body).await.unwrap(), "retry: 2000\n\n");
        let event = chunk(&mut body).await.unwrap();
        assert!(
            event.starts_with("id: 1\nevent: PENDING\ndata: {"),
            "{event}"
        );
        assert!(event.contains("\"node\":\"edge-t\""), "{event}");
        let t0 = Instant::now();
        assert_eq!(chunk(&mut body).await.unwrap(), ": heartbeat\n\n");
        assert_eq!(t0.elapsed(), Duration::from_secs(15));
        f.commit(2, LoginState::Cancelled);
        let event = chunk(&mut body).await.unwrap();
        assert!(event.starts_with("id: 2\nevent: CANCELLED\n"), "{event}");
        assert!(chunk(&mut body).await.is_none(), "a final state ends it");

        // At drain: a jittered retry (0.5..2 × the hint), then the end.
        f.commit(3, LoginState::Pending);
        let mut body = response(endpoint, f.delivery(Some(3)).await).into_body();
        assert_eq!(chunk(&mut body).await.unwrap(), "retry: 2000\n\n");
        f.drain.start();
        let retry = chunk(&mut body).await.unwrap();
        let ms: u64 = retry
            .strip_prefix("retry: ")
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("{retry}"));
        assert!((1000..=4000).contains(&ms), "{ms}");
        assert!(chunk(&mut body).await.is_none());
    }
}
