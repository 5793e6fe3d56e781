//! TCP connections bound to a chosen source address: the one place that
//! opens sockets, so that a load generator holding tens of thousands of
//! connections from several loopback addresses never runs out of ports.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU32, Ordering},
        OnceLock,
    },
};

use rand::Rng;
use tokio::net::{TcpSocket, TcpStream};

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
pub async fn connect(src: Option<IpAddr>, addr: SocketAddr) -> Result<TcpStream, ConnectError> {
    let wrap = |source| ConnectError { addr, src, source };
    let socket = match src {
        Some(ip) => bound_socket(ip, addr),
        None => new_socket(addr),
    }
    .map_err(wrap)?;
    let stream = socket.connect(addr).await.map_err(wrap)?;
    stream.set_nodelay(true).map_err(wrap)?;
    Ok(stream)
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
            let client = connect(Some(src), addr).await.unwrap();
            let (_server, peer) = listener.accept().await.unwrap();
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
