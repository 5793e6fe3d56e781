//! Long polling: one push as a JSON answer. The request is held until a
//! snapshot newer than `since` is pushed, the wait ends, or the node
//! drains; then the newest snapshot the node has is the answer (the
//! client asks again with its version). When a push is due is
//! `delivery::push`'s.

use std::{sync::Arc, time::Duration};

use crate::{
    config::{duration, invalid, ConfigError},
    delivery::{Delivery, Push},
    domain::Snapshot,
};

/// Settings of the long poll (docs/configuration.md, "edge").
#[derive(Debug, Clone, clap::Args)]
pub struct LongPollSettings {
    /// Longest a request is held; a client's `wait` may only shorten it.
    #[arg(id = "long-poll-max", long = "long-poll-max", env = "QRLOGIN_LONG_POLL_MAX", default_value = "25s", value_parser = duration)]
    pub max_wait: Duration,
}

impl LongPollSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_wait.is_zero() {
            return Err(invalid(
                "QRLOGIN_LONG_POLL_MAX",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// What every long poll of this node shares.
pub struct Endpoint {
    pub node: String,
    pub settings: LongPollSettings,
}

impl Endpoint {
    /// How long to hold a request that asked for `wait`.
    pub fn wait(&self, wait: Option<Duration>) -> Duration {
        let max = self.settings.max_wait;
        wait.unwrap_or(max).min(max)
    }
}

/// The snapshot to answer with after holding `delivery` for up to `wait`:
/// the pushed one, or (timeout, drain) the newest known. `None`: nothing
/// was read yet.
pub async fn answer(mut delivery: Delivery, wait: Duration) -> Option<Arc<Snapshot>> {
    let pushed = tokio::select! {
        push = delivery.next_push() => match push {
            Push::Snapshot(s) => Some(s),
            // No keep-alive is set; a leave (drain, or the end of the
            // watch) answers with what the node has.
            Push::KeepAlive | Push::Leave(_) => None,
        },
        _ = tokio::time::sleep(wait) => None,
    };
    pushed.or_else(|| delivery.current())
}

/// The answer's body.
pub fn body(s: &Snapshot, node: &str) -> serde_json::Value {
    s.to_json(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{delivery::push::tests::fixture, domain::LoginState};
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn answers_news_at_once_and_the_newest_known_at_the_wait_or_drain() {
        let f = fixture();
        f.commit(3, LoginState::Pending);
        // News beyond `since`: answered at once.
        let t0 = Instant::now();
        let s = answer(f.delivery(Some(2)).await, Duration::from_secs(25)).await;
        assert_eq!(s.map(|s| s.version), Some(3));
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // Nothing newer: the current snapshot when the wait ends.
        let s = answer(f.delivery(Some(3)).await, Duration::from_secs(25)).await;
        assert_eq!(
            s.map(|s| (s.version, s.state)),
            Some((3, LoginState::Pending))
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(25));
        // A commit while held is the answer.
        let held = answer(f.delivery(Some(3)).await, Duration::from_secs(25));
        let held = tokio::spawn(held);
        tokio::time::sleep(Duration::from_secs(1)).await;
        f.commit(4, LoginState::Scanned);
        assert_eq!(held.await.unwrap().map(|s| s.version), Some(4));
        assert_eq!(t0.elapsed(), Duration::from_secs(26));
        // Drain: the newest known at once.
        let held = tokio::spawn(answer(f.delivery(Some(4)).await, Duration::from_secs(25)));
        tokio::time::sleep(Duration::from_secs(1)).await;
        f.drain.start();
        assert_eq!(held.await.unwrap().map(|s| s.version), Some(4));
        assert_eq!(t0.elapsed(), Duration::from_secs(27));
    }

    #[test]
    fn a_client_may_only_shorten_the_wait() {
        let e = Endpoint {
            node: "n".into(),
            settings: LongPollSettings {
                max_wait: Duration::from_secs(25),
            },
        };
        assert_eq!(e.wait(None), Duration::from_secs(25));
        assert_eq!(e.wait(Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(
            e.wait(Some(Duration::from_secs(90))),
            Duration::from_secs(25)
        );
    }
}
