//! The cap on connections that have not sent a complete request head.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use super::ClientKey;

/// Counts connections that have not yet sent a complete request head,
/// node-wide and per client key, and refuses beyond either cap. Such a
/// connection costs a file descriptor and a head buffer while it says
/// nothing; without a cap, idle sockets alone exhaust the open-file limit.
/// The per-client cap does not apply to trusted proxies (every connection
/// through a proxy comes from its address).
#[derive(Clone)]
pub struct HeadGate {
    inner: Arc<HeadGateInner>,
}

struct HeadGateInner {
    max: usize,
    max_per_client: usize,
    open: AtomicUsize,
    /// Keys with at least one waiting connection (so at most `max` entries).
    per_client: Mutex<HashMap<ClientKey, u32>>,
}

/// Why a connection was refused before its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRefused {
    /// The node holds its maximum of connections without a head.
    Node,
    /// This client holds its maximum of connections without a head.
    Client,
}

/// One connection waiting for its head; released on drop.
pub struct HeadSlot {
    gate: Arc<HeadGateInner>,
    key: Option<ClientKey>,
}

impl HeadGate {
    pub fn new(max: usize, max_per_client: usize) -> Self {
        Self {
            inner: Arc::new(HeadGateInner {
                max,
                max_per_client,
                open: AtomicUsize::new(0),
                per_client: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Connections currently waiting for their head.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection from `ip`; `per_client` says
    /// whether the per-client cap applies (false for trusted proxies).
    pub fn try_enter(&self, ip: IpAddr, per_client: bool) -> Result<HeadSlot, HeadRefused> {
        let g = &self.inner;
        if g.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < g.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(HeadRefused::Node);
        }
        let mut slot = HeadSlot {
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
                return Err(HeadRefused::Client);
            }
            *n += 1;
            slot.key = Some(key);
        }
        Ok(slot)
    }
}

impl Drop for HeadSlot {
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
    fn head_gate_caps_the_node_and_each_client() {
        let g = HeadGate::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let a1 = g.try_enter(a, true).unwrap();
        let _a2 = g.try_enter(a, true).unwrap();
        assert_eq!(g.try_enter(a, true).err(), Some(HeadRefused::Client));
        // A trusted proxy is not capped per client, only node-wide.
        let _p = g.try_enter(a, false).unwrap();
        assert_eq!(g.try_enter(b, true).err(), Some(HeadRefused::Node));
        assert_eq!(g.open(), 3);
        drop(a1);
        let _b1 = g.try_enter(b, true).unwrap();
        // Same /64: same client.
        assert_eq!(
            g.try_enter("2001:db8::2".parse().unwrap(), true).err(),
            Some(HeadRefused::Node)
        );
        drop(_b1);
        drop(_a2);
        drop(_p);
        assert_eq!(g.open(), 0);
        assert!(g.inner.per_client.lock().unwrap().is_empty());
    }
}
