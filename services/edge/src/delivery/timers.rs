//! One timer queue for the whole node: every watched session's next
//! deadline or re-read retry is one key in an ordered map, and one task
//! sleeps until the earliest. Its cost follows the sessions that have a
//! deadline pending (one map node each), not a task or a timer per session.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
};

use tokio::{sync::Notify, time::Instant};

use crate::hub::Entry;

/// A place in the queue: the due time and a tie-breaking sequence number.
pub type TimerKey = (Instant, u64);

#[derive(Default)]
pub struct Timers {
    inner: Mutex<Inner>,
    /// Woken when the earliest due time moved earlier.
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    queue: BTreeMap<TimerKey, Weak<Entry>>,
    seq: u64,
}

impl Timers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves `entry`'s key (`slot`, kept by the caller) to `due`, or drops
    /// it when `due` is `None`.
    pub fn set(&self, entry: &Arc<Entry>, slot: &mut Option<TimerKey>, due: Option<Instant>) {
        if slot.map(|k| k.0) == due {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = slot.take() {
            inner.queue.remove(&old);
        }
        let Some(at) = due else { return };
        inner.seq += 1;
        let key = (at, inner.seq);
        let earliest = inner.queue.first_key_value().is_none_or(|(k, _)| key < *k);
        inner.queue.insert(key, Arc::downgrade(entry));
        *slot = Some(key);
        drop(inner);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Removes a key (the session is no longer watched).
    pub fn cancel(&self, slot: &mut Option<TimerKey>) {
        if let Some(old) = slot.take() {
            self.lock().queue.remove(&old);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least one key is due and takes every due one, with
    /// the key it had (the caller clears the entry's slot if it still
    /// holds that key).
    pub async fn next_due(&self) -> Vec<(TimerKey, Arc<Entry>)> {
        loop {
            let notified = self.changed.notified();
            let next = {
                let mut inner = self.lock();
                let now = Instant::now();
                let mut due = Vec::new();
                while let Some(entry) = inner.queue.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let (key, weak) = entry.remove_entry();
                    if let Some(e) = weak.upgrade() {
                        due.push((key, e));
                    }
                }
                if !due.is_empty() {
                    return due;
                }
                inner.queue.first_key_value().map(|(k, _)| k.0)
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}
