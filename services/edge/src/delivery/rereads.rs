//! The node's one re-read queue: sessions owed a read from auth (deadline,
//! retry, gap, or the sweep after a reconnect) wait here, at most once each,
//! and at most `max_rereads` reads run at once. A storm (every watched
//! session after a reconnect) is therefore bounded in concurrency and
//! spread over time; the queue is bounded by the number of watched sessions.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use super::{Core, Reread};
use crate::{auth_client::AuthError, hub::Entry};

#[derive(Default)]
pub struct Rereads {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Arc<Entry>>,
    workers: usize,
}

impl Rereads {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Core {
    /// Queues a re-read of `entry` unless one is queued already.
    pub(super) fn enqueue(self: &Arc<Self>, entry: &Arc<Entry>) {
        {
            let mut sync = entry.lock_sync();
            if sync.queued {
                return;
            }
            sync.queued = true;
        }
        let spawn = {
            let mut inner = self.rereads.lock();
            inner.queue.push_back(entry.clone());
            let spawn = inner.workers < self.settings.max_rereads;
            if spawn {
                inner.workers += 1;
            }
            spawn
        };
        if spawn {
            tokio::spawn(worker(self.clone()));
        }
    }

    /// Reads the session from auth and settles the outcome.
    async fn reread(&self, entry: &Arc<Entry>) {
        if !entry.is_attached() {
            return; // nobody watches it any more
        }
        let Some(secret) = entry.secret().map(str::to_owned) else {
            // The first request is still being authorized: try again soon.
            self.settle(entry, Reread::Unreachable);
            return;
        };
        self.metrics.recheck();
        let outcome = match self.reader.read(&entry.id, &secret).await {
            Ok(snapshot) => {
                entry.offer(snapshot);
                Reread::Answered
            }
            Err(AuthError::Unavailable(e)) => {
                tracing::debug!(session = %entry.id, error = %e, "re-read failed; retrying with backoff");
                Reread::Unreachable
            }
            Err(e) => {
                tracing::info!(session = %entry.id, error = %e, "re-read refused");
                Reread::Answered
            }
        };
        self.settle(entry, outcome);
    }
}

async fn worker(core: Arc<Core>) {
    loop {
        let entry = {
            let mut inner = core.rereads.lock();
            match inner.queue.pop_front() {
                Some(e) => e,
                None => {
                    inner.workers -= 1;
                    return;
                }
            }
        };
        // Cleared before the read: what happens during it may queue the
        // session again.
        entry.lock_sync().queued = false;
        core.reread(&entry).await;
    }
}
