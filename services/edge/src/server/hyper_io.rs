//! The socket as hyper sees it: the bytes the front server already read
//! put back in front, and hyper's own refusals replaced. On a kept-alive
//! connection hyper reads the later heads itself, and answers one that is
//! malformed or over the limits with an empty `400`/`431` of its own,
//! without the JSON body and node header every other error has. Such a
//! refusal is recognised as a response head that lacks the node header
//! (every response of the router carries it) and written as the front
//! server's answer instead.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use axum::body::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::answers::Answers;

pub(super) struct HyperIo<S> {
    prefix: Bytes,
    inner: S,
    answers: Arc<Answers>,
    /// A refusal being written in place of hyper's: the answer, how much of
    /// it is written, and how many bytes hyper is told were written.
    replacing: Option<(Bytes, usize, usize)>,
}

impl<S> HyperIo<S> {
    pub(super) fn new(prefix: Bytes, inner: S, answers: Arc<Answers>) -> Self {
        Self {
            prefix,
            inner,
            answers,
            replacing: None,
        }
    }

    /// The answer for `buf` if it is a whole refusal head written by hyper.
    fn refusal(&self, buf: &[u8]) -> Option<Bytes> {
        // HTTP/1.0 after a kept-alive HTTP/1.0 exchange.
        let status = buf
            .strip_prefix(b"HTTP/1.1 ")
            .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?
            .get(..3)?;
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = &buf[..end + 2];
        if head
            .windows(14)
            .any(|w| w.eq_ignore_ascii_case(b"\r\nx-edge-node:"))
        {
            return None;
        }
        let (answer, code) = self.answers.for_hyper_status(status)?;
        self.answers.metrics.rejected(code);
        Some(answer.clone())
    }
}

impl<S: AsyncWrite + Unpin> HyperIo<S> {
    /// Writes the replacement; then reports hyper's bytes as written.
    fn poll_replace(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some((answer, written, owed)) = &mut self.replacing else {
            return Poll::Ready(Ok(0));
        };
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        let owed = *owed;
        self.replacing = None;
        Poll::Ready(Ok(owed))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HyperIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(answer) = self.refusal(buf) {
                self.replacing = Some((answer, 0, buf.len()));
            }
        }
        if self.replacing.is_some() {
            return self.poll_replace(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if let Some(answer) = self.refusal(first) {
                    self.replacing = Some((answer, 0, first.len()));
                }
            }
        }
        if self.replacing.is_some() {
            return self.poll_replace(cx);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.replacing.is_some() {
            ready!(self.poll_replace(cx))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.replacing.is_some() {
            ready!(self.poll_replace(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
