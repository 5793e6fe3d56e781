//! Counting what each client holds open, node-wide and per client.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use super::ClientKey;

/// Counts open things (connections without a head, requests, gRPC
/// connections), node-wide and per client key, and refuses beyond either
/// cap. Three gates use it: connections that have not sent a complete
/// request head (each costs a file descriptor and a head buffer while it
/// says nothing), requests and streams of the public port (counted from
/// their head, so a body still arriving counts too), and connections to
/// the gRPC watch port. The per-client cap does not apply to trusted
/// proxies (every connection through a proxy comes from its address); the
/// caller says when it applies.
#[derive(Clone)]
pub struct ClientGate {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    max_per_client: usize,
    open: AtomicUsize,
    /// Keys holding at least one slot (so at most `max` entries, and at
    /// most one per open connection).
    per_client: Mutex<HashMap<ClientKey, u32>>,
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The node holds its maximum.
    Node,
    /// This client holds its maximum.
    Client,
}

/// One slot of a gate; released on drop.
pub struct ClientSlot {
    gate: Arc<Inner>,
    key: Option<ClientKey>,
}

impl ClientGate {
    /// At most `max` slots on the node and `max_per_client` per client.
    pub fn new(max: usize, max_per_client: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max,
                max_per_client,
                open: AtomicUsize::new(0),
                per_client: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Slots currently taken.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for `ip`; `per_client` says whether the per-client cap
    /// applies (false for trusted proxies).
    pub fn try_enter(&self, ip: IpAddr, per_client: bool) -> Result<ClientSlot, Refused> {
        let g = &self.inner;
        if g.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < g.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refused::Node);
        }
        let mut slot = ClientSlot {
            gate: g.clone(),
            key: None,
        };
        if per_client {
            let key = ClientKey::of(ip);
            let mut map = g.per_client.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(key).or_insert(0);
            if *n as usize >= g.max_per_client {
                if *n == 0 {
                    map.remove(&key);
                }
                // Dropping `slot` gives the node-wide count back.
                return Err(Refused::Client);
            }
            *n += 1;
            slot.key = Some(key);
        }
        Ok(slot)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut map = self
                .gate
                .per_client
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_caps_the_node_and_each_client() {
        let g = ClientGate::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let a1 = g.try_enter(a, true).unwrap();
        let _a2 = g.try_enter(a, true).unwrap();
        assert_eq!(g.try_enter(a, true).err(), Some(Refused::Client));
        // A trusted proxy is not capped per client, only node-wide.
        let _p = g.try_enter(a, false).unwrap();
        assert_eq!(g.try_enter(b, true).err(), Some(Refused::Node));
        assert_eq!(g.open(), 3);
        drop(a1);
        let _b1 = g.try_enter(b, true).unwrap();
        // Same /64: same client.
        assert_eq!(
            g.try_enter("2001:db8::2".parse().unwrap(), true).err(),
            Some(Refused::Node)
        );
        drop(_b1);
        drop(_a2);
        drop(_p);
        assert_eq!(g.open(), 0);
        assert!(g.inner.per_client.lock().unwrap().is_empty());
    }
}
