//! A socket whose writes have a deadline. A write, flush or shutdown that
//! makes no progress for the write timeout fails with `TimedOut`, which
//! ends whatever is writing (hyper, the direct path, a WebSocket) and so
//! drops the connection with everything it holds (admission, watcher,
//! subscription). The timer exists only while a write is blocked: an idle
//! connection carries no timer.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use crate::metrics::Metrics;

/// What every connection's deadline shares.
pub struct WriteLimits {
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// `inner` with a deadline on every write.
pub struct WriteDeadline<S> {
    inner: S,
    limits: Arc<WriteLimits>,
    /// Armed when a write is blocked, dropped when one makes progress.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limits: Arc<WriteLimits>) -> Self {
        Self {
            inner,
            limits,
            timer: None,
            timed_out: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Passes a write's outcome through, or fails it once it has been
    /// blocked for the timeout.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if outcome.is_ready() {
            self.timer = None;
            return outcome;
        }
        if self.timed_out {
            return Poll::Ready(Err(stuck()));
        }
        let timeout = self.limits.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.timer = None;
        self.timed_out = true;
        self.limits.metrics.write_timeout();
        tracing::debug!(timeout = ?timeout, "dropping a peer that does not read");
        Poll::Ready(Err(stuck()))
    }
}

fn stuck() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the peer did not read within the write timeout",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let outcome = Pin::new(&mut me.inner).poll_write(cx, buf);
        me.deadline(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        let outcome = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        me.deadline(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let outcome = Pin::new(&mut me.inner).poll_flush(cx);
        me.deadline(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        let outcome = Pin::new(&mut me.inner).poll_shutdown(cx);
        me.deadline(cx, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_fails_after_the_timeout_and_is_counted() {
        let metrics = Arc::new(Metrics::default());
        let limits = Arc::new(WriteLimits {
            timeout: Duration::from_secs(5),
            metrics: metrics.clone(),
        });
        // A pipe with a 16-byte buffer that nobody reads.
        let (a, _b) = tokio::io::duplex(16);
        let mut s = WriteDeadline::new(a, limits);
        s.write_all(&[0; 16]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = s.write_all(&[0; 1]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(metrics
            .render()
            .contains("qrlogin_edge_write_timeouts_total 1"));
        // Later blocked writes fail at once, and the peer is counted once.
        let again = tokio::time::Instant::now();
        assert!(s.write_all(&[0]).await.is_err());
        assert_eq!(again.elapsed(), Duration::ZERO);
        assert!(metrics
            .render()
            .contains("qrlogin_edge_write_timeouts_total 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_resets_the_deadline() {
        let limits = Arc::new(WriteLimits {
            timeout: Duration::from_secs(5),
            metrics: Arc::new(Metrics::default()),
        });
        let (a, mut b) = tokio::io::duplex(4);
        let mut s = WriteDeadline::new(a, limits);
        // A slow reader: 4 bytes every 3 s, below the 5 s timeout each time.
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            let mut buf = [0u8; 4];
            while got.len() < 32 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let n = b.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        s.write_all(&[7; 32]).await.unwrap();
        assert_eq!(reader.await.unwrap(), vec![7; 32]);
    }
}
