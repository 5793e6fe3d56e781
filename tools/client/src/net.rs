//! TCP connections bound to a chosen source address: the one place that
//! opens sockets, so that a load generator holding tens of thousands of
//! connections from several loopback addresses never runs out of ports.
//! Bytes read and written on sockets bound to a chosen address are counted
//! ([`bound_bytes`]): a load generator binds its browsers' sockets and not
//! its phones', and so learns what the browsers cost on the wire.

use std::{
    io::IoSlice,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        OnceLock,
    },
    task::{Context, Poll},
};

use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpSocket, TcpStream},
};

/// Payload bytes (TCP/IP headers not included) read and written, process
/// wide, on sockets bound to a chosen source address.
static BOUND_READ: AtomicU64 = AtomicU64::new(0);
static BOUND_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// `(read, written)` bytes so far on sockets opened with a source address.
pub fn bound_bytes() -> (u64, u64) {
    (
        BOUND_READ.load(Ordering::Relaxed),
        BOUND_WRITTEN.load(Ordering::Relaxed),
    )
}

/// A TCP connection; counts its bytes into [`bound_bytes`] when it was
/// opened with a source address. Derefs to the [`TcpStream`].
#[derive(Debug)]
pub struct Stream {
    inner: TcpStream,
    counted: bool,
}

impl std::ops::Deref for Stream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.inner
    }
}

impl Stream {
    fn add(&self, counter: &AtomicU64, n: usize) {
        if self.counted {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.add(&BOUND_READ, buf.filled().len() - before);
        }
        r
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.add(&BOUND_WRITTEN, n);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            this.add(&BOUND_WRITTEN, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A connection that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} from {src:?}: {source}")]
pub struct ConnectError {
    pub addr: SocketAddr,
    pub src: Option<IpAddr>,
    #[source]
    pub source: std::io::Error,
}

/// Source ports chosen by the load generator: those below the kernel's
/// ephemeral range, which no other process gets without asking for them.
/// `bind(ip, 0)` competes for the ephemeral range with every connection on
/// the host, even from other addresses, and fails when other load tests
/// hold many sockets at the same time.
struct SourcePorts {
    first: u16,
    count: u32,
    next: AtomicU32,
}

/// Binding attempts on chosen ports (a port may be taken by a listener or
/// a connection in TIME_WAIT) before leaving the choice to the kernel.
const BIND_ATTEMPTS: usize = 64;

fn source_ports() -> Option<&'static SourcePorts> {
    static PORTS: OnceLock<Option<SourcePorts>> = OnceLock::new();
    PORTS
        .get_or_init(|| {
            let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
            let low: u16 = range.split_whitespace().next()?.parse().ok()?;
            let first = 1024u16;
            let count = u32::from(low.checked_sub(first)?);
            (count >= 4096).then(|| SourcePorts {
                first,
                count,
                next: AtomicU32::new(rand::rng().random_range(0..count)),
            })
        })
        .as_ref()
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// A socket bound to `ip`: on a chosen port below the ephemeral range when
/// one is free, else on a port the kernel picks.
fn bound_socket(ip: IpAddr, addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if let Some(ports) = source_ports() {
        for _ in 0..BIND_ATTEMPTS {
            let n = ports.next.fetch_add(1, Ordering::Relaxed) % ports.count;
            let port = ports.first + n as u16;
            let socket = new_socket(addr)?;
            match socket.bind(SocketAddr::new(ip, port)) {
                Ok(()) => return Ok(socket),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
    }
    let socket = new_socket(addr)?;
    socket.bind(SocketAddr::new(ip, 0))?;
    Ok(socket)
}

/// Opens a TCP connection to `addr`, bound to `src` first when given.
pub async fn connect(src: Option<IpAddr>, addr: SocketAddr) -> Result<Stream, ConnectError> {
    let wrap = |source| ConnectError { addr, src, source };
    let socket = match src {
        Some(ip) => bound_socket(ip, addr),
        None => new_socket(addr),
    }
    .map_err(wrap)?;
    let stream = socket.connect(addr).await.map_err(wrap)?;
    stream.set_nodelay(true).map_err(wrap)?;
    Ok(Stream {
        inner: stream,
        counted: src.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_from_a_chosen_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let src: IpAddr = "127.0.0.9".parse().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut client = connect(Some(src), addr).await.unwrap();
            let (mut server, peer) = listener.accept().await.unwrap();
            let before = bound_bytes();
            tokio::io::AsyncWriteExt::write_all(&mut client, b"ping")
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut server, b"pong!")
                .await
                .unwrap();
            let mut got = [0u8; 5];
            tokio::io::AsyncReadExt::read_exact(&mut client, &mut got)
                .await
                .unwrap();
            let after = bound_bytes();
            // Other tests may count at the same time: at least ours.
            assert!(after.0 - before.0 >= 5 && after.1 - before.1 >= 4);
            assert_eq!(peer.ip(), src);
            assert_eq!(client.local_addr().unwrap(), peer);
            if let Some(ports) = source_ports() {
                let low = u32::from(ports.first) + ports.count;
                assert!(
                    u32::from(peer.port()) < low,
                    "port {} is ephemeral",
                    peer.port()
                );
            }
            assert!(seen.insert(peer.port()), "port {} used twice", peer.port());
        }
    }
}
