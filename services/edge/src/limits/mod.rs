//! Admission limits: the per-client create rate ([`CreateRateLimiter`]),
//! the per-session poll pace ([`PollPace`]), the node-wide cap on requests
//! and streams ([`ConnectionGate`]), and counts of what each client holds
//! open ([`ClientGate`]: connections that have not sent a complete request
//! head, requests and streams, gRPC connections), node-wide and per
//! client. Clients are [`ClientKey`]s.

mod client_gate;
mod create_rate;
mod lru;
mod poll_pace;

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use client_gate::{ClientGate, ClientSlot, Refused};
pub use create_rate::CreateRateLimiter;
pub use poll_pace::{Held, PollPace};

/// What one client is, for limits: an IPv4 address, or the /64 prefix of
/// an IPv6 address (one host is usually given a whole /64, so keying on
/// the exact address would hand it 2^64 budgets). IPv4-mapped IPv6
/// addresses count as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    V6Prefix64([u8; 8]),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Self::V6Prefix64([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

impl std::fmt::Display for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(o) => write!(f, "{}", IpAddr::from(*o)),
            Self::V6Prefix64(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(p);
                write!(f, "{}/64", Ipv6Addr::from(o))
            }
        }
    }
}

/// The node-wide cap on concurrent requests and streams.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
}

/// One admitted request or stream, with its client's slot when it counts
/// against one; both are released on drop.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    _client: Option<ClientSlot>,
}

impl Admission {
    /// The admission holds `client` too, for as long as it lives (a stream,
    /// a WebSocket that takes it over).
    pub fn with_client(self, client: Option<ClientSlot>) -> Self {
        Self {
            _client: client,
            ..self
        }
    }
}

/// The admission of the current request, for handlers that keep the
/// connection past the response (WebSocket) to take over.
#[derive(Clone, Default)]
pub struct AdmissionSlot(pub Arc<Mutex<Option<Admission>>>);

impl AdmissionSlot {
    pub fn take(&self) -> Option<Admission> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl ConnectionGate {
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max)),
        }
    }

    /// Admits one more, or `None` at the cap (the caller answers 503).
    pub fn try_admit(&self) -> Option<Admission> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(Admission {
            _permit: permit,
            _client: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_refuses_beyond_the_cap() {
        let g = ConnectionGate::new(1);
        let a = g.try_admit().unwrap();
        assert!(g.try_admit().is_none());
        drop(a);
        assert!(g.try_admit().is_some());
    }
}
