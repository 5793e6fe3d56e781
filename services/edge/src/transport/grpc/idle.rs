//! Connections of the gRPC port that carry no stream: how their streams
//! are counted, and the deadlines that close them.
//!
//! hyper's HTTP/2 server has no handshake deadline and keeps a connection
//! without streams for as long as the peer answers pings, so idle sockets
//! alone could hold every connection the port allows. Here every
//! connection knows how many streams it carries ([`Streams`]): the layer
//! [`CountStreamsLayer`] counts a request (a watch, a health check) from
//! its arrival until its response body is dropped, which for a watch is
//! the end of the stream. The connection's reader ([`Deadlines`]) closes
//! the connection when the client has not sent its connection preface
//! within the handshake timeout, or when no stream has been open for the
//! idle timeout. The timer runs only while it can fire: a connection with
//! an open stream carries none.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Bytes;
use futures::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

/// The client's connection preface (RFC 9113, 3.4): the 24-byte magic and
/// the 9-byte header of its SETTINGS frame. A connection has completed
/// its handshake once this much has arrived.
const PREFACE_BYTES: usize = 24 + 9;

/// The open streams of one connection.
#[derive(Default)]
pub struct Streams {
    open: AtomicUsize,
    /// The connection's reader, woken when the last stream closes so that
    /// it arms the idle timer.
    reader: AtomicWaker,
}

impl Streams {
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One open stream; closes on drop.
struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn new(streams: Arc<Streams>) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Self(streams)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// What tonic puts in every request of a connection (in place of its
/// `TcpConnectInfo`: nothing on this port reads the peer's address): the
/// connection's streams.
#[derive(Clone)]
pub struct ConnInfo {
    pub streams: Arc<Streams>,
}

/// The deadlines of one connection, checked by its reader whenever a read
/// would wait.
pub struct Deadlines {
    streams: Arc<Streams>,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    /// Bytes read until the preface was complete.
    preface_read: usize,
    accepted: Instant,
    /// Since when the connection has had no stream, while it has none.
    idle_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl Deadlines {
    pub fn new(streams: Arc<Streams>, handshake_timeout: Duration, idle_timeout: Duration) -> Self {
        let accepted = Instant::now();
        Self {
            streams,
            handshake_timeout,
            idle_timeout,
            preface_read: 0,
            accepted,
            idle_since: Some(accepted),
            timer: Box::pin(tokio::time::sleep_until(accepted + handshake_timeout)),
        }
    }

    /// Counts bytes read, until the preface is complete.
    pub fn read(&mut self, n: usize) {
        if self.preface_read < PREFACE_BYTES {
            self.preface_read += n;
        }
    }

    /// The moment the connection is to be closed, if any.
    fn deadline(&mut self) -> Option<(Instant, &'static str)> {
        if self.preface_read < PREFACE_BYTES {
            let at = self.accepted + self.handshake_timeout;
            return Some((
                at,
                "no HTTP/2 connection preface within the handshake timeout",
            ));
        }
        if self.streams.open() > 0 {
            self.idle_since = None;
            return None;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        Some((
            since + self.idle_timeout,
            "no stream within the idle timeout",
        ))
    }

    /// Called when a read would wait: an error once a deadline has passed
    /// (which ends the connection), else pending with the timer (and the
    /// last stream's close) set to wake the reader.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.streams.reader.register(cx.waker());
        let Some((at, why)) = self.deadline() else {
            return Poll::Pending;
        };
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!(reason = why, "closing a gRPC connection");
                Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, why))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Counts each request as a stream of its connection (tonic's
/// `Server::layer`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CountStreamsLayer;

impl<S> tower::Layer<S> for CountStreamsLayer {
    type Service = CountStreams<S>;

    fn layer(&self, inner: S) -> CountStreams<S> {
        CountStreams { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CountStreams<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, B, R> tower::Service<http::Request<B>> for CountStreams<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Counted<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| StreamGuard::new(c.streams.clone()));
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Counted {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its stream counted until it is dropped.
pub struct Counted<B> {
    body: B,
    _guard: Option<StreamGuard>,
}

impl<B> http_body::Body for Counted<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(d: &mut Deadlines) -> bool {
        let waker = futures::task::noop_waker();
        d.poll_expired(&mut Context::from_waker(&waker))
            .is_pending()
    }

    #[tokio::test(start_paused = true)]
    async fn the_preface_then_a_stream_keep_a_connection_open() {
        let streams = Arc::new(Streams::default());
        let mut d = Deadlines::new(
            streams.clone(),
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        assert!(pending(&mut d));
        // Silent past the handshake timeout: closed.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!pending(&mut d));

        let mut d = Deadlines::new(
            streams.clone(),
            Duration::from_secs(5),
            Duration::from_secs(30),
        );
        d.read(PREFACE_BYTES);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(pending(&mut d));
        // A stream holds it open however long it lasts.
        let stream = StreamGuard::new(streams.clone());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(pending(&mut d));
        // From the last stream's end, the idle timeout runs again.
        drop(stream);
        assert!(pending(&mut d));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(pending(&mut d));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!pending(&mut d));
    }

    #[tokio::test]
    async fn a_preface_in_pieces_counts_whole() {
        let mut d = Deadlines {
            streams: Arc::default(),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            preface_read: 0,
            accepted: Instant::now(),
            idle_since: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        d.read(20);
        assert!(d.deadline().unwrap().1.contains("preface"));
        d.read(13);
        assert!(d.deadline().unwrap().1.contains("idle"));
    }
}
