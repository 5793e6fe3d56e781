//! Auth's one NATS connection: every configured member, pings that notice
//! a frozen one, no limit on reconnects, a reconnect that prefers another
//! member than the one just lost, and a move at a lame duck notice.

use std::time::Duration;

use super::{unavailable, BrokerError, BrokerSettings, LinkState};

/// Longest wait for a (re)connection's handshake. A member that accepts
/// TCP but answers nothing (frozen) costs this much before the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The name auth's connection gives in CONNECT (the servers' `/connz`).
pub const CLIENT_NAME: &str = "qrlogin-auth";

/// Connects to any member of `settings.servers`. `on_link` hears every
/// later disconnect and reconnect. The task returned moves the connection
/// off a member in lame duck mode; it holds a client handle, so the caller
/// stops it when done with the connection.
pub(super) async fn connect(
    settings: &BrokerSettings,
    on_link: impl Fn(LinkState) + Send + Sync + 'static,
) -> Result<(async_nats::Client, tokio::task::JoinHandle<()>), BrokerError> {
    // Lame duck mode announced by our member: move now, not when it
    // closes the connection in the middle of a write.
    let (lame_duck_tx, lame_duck_rx) = tokio::sync::mpsc::channel::<()>(1);
    let client = settings
        .access
        .options()
        .name(CLIENT_NAME)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(settings.ping_interval)
        .request_timeout(Some(settings.request_timeout))
        .max_reconnects(None)
        .reconnect_to_server_callback(
            |servers, last| async move { another_member(&servers, &last) },
        )
        .event_callback(move |event| {
            let state = match event {
                async_nats::Event::Connected => Some(LinkState::Up),
                async_nats::Event::Disconnected => Some(LinkState::Down),
                async_nats::Event::LameDuckMode => {
                    let _ = lame_duck_tx.try_send(());
                    None
                }
                _ => None,
            };
            if let Some(state) = state {
                on_link(state);
            }
            async {}
        })
        .connect(settings.servers.clone())
        .await
        .map_err(unavailable)?;
    let lame_duck = tokio::spawn(leave_lame_duck(client.clone(), lame_duck_rx));
    Ok((client, lame_duck))
}

/// The member to reconnect to: the one with the fewest failed attempts,
/// preferring any other than the member just lost (`last`): a frozen member
/// still accepts TCP connections and would cost a handshake timeout (a
/// member is known by the host and port it reports; one listening on
/// 0.0.0.0 by its port alone). `None` (async-nats's own choice) for an
/// empty pool.
fn another_member(
    servers: &[async_nats::Server],
    last: &async_nats::ServerInfo,
) -> Option<async_nats::ReconnectToServer> {
    use rand::seq::SliceRandom as _;
    let is_last = |s: &async_nats::Server| {
        s.addr.port() == last.port && (s.addr.host() == last.host || last.host == "0.0.0.0")
    };
    let mut candidates: Vec<&async_nats::Server> = servers.iter().collect();
    candidates.shuffle(&mut rand::rng());
    candidates.sort_by_key(|s| (s.failed_attempts, is_last(s)));
    candidates.first().map(|s| async_nats::ReconnectToServer {
        addr: s.addr.clone(),
        delay: None,
    })
}

/// Reconnects (to another member) each time the member announces lame
/// duck mode. Ends with the connection.
async fn leave_lame_duck(client: async_nats::Client, mut notices: tokio::sync::mpsc::Receiver<()>) {
    while notices.recv().await.is_some() {
        tracing::info!("the NATS member entered lame duck mode; moving to another");
        if let Err(e) = client.force_reconnect().await {
            tracing::warn!(error = %e, "reconnect after lame duck notice failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, failed_attempts: usize) -> async_nats::Server {
        async_nats::Server {
            addr: url.parse().unwrap(),
            failed_attempts,
            did_connect: true,
            is_discovered: false,
            last_error: None,
        }
    }

    #[test]
    fn a_reconnect_prefers_another_member_unless_it_failed_more() {
        let last = async_nats::ServerInfo {
            host: "127.0.0.1".into(),
            port: 4222,
            ..Default::default()
        };
        let pool = [
            server("nats://127.0.0.1:4222", 0),
            server("nats://127.0.0.1:4223", 0),
            server("nats://127.0.0.1:4224", 0),
        ];
        let mut picked = std::collections::HashSet::new();
        for _ in 0..50 {
            let next = another_member(&pool, &last).unwrap();
            assert_ne!(next.addr.port(), 4222, "not the member just lost");
            picked.insert(next.addr.port());
        }
        assert_eq!(picked.len(), 2, "either of the others");
        let others_failed = [
            server("nats://127.0.0.1:4222", 0),
            server("nats://127.0.0.1:4223", 1),
            server("nats://127.0.0.1:4224", 2),
        ];
        let next = another_member(&others_failed, &last).unwrap();
        assert_eq!(next.addr.port(), 4222, "back to it when the others fail");
        assert!(another_member(&[], &last).is_none());
    }
}
