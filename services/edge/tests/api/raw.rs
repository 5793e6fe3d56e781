//! Raw sockets against the edge, for what an HTTP client library hides:
//! where a connection comes from, what the server writes and when it
//! closes, and the metrics that say what it holds.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::AsyncReadExt,
    net::{TcpSocket, TcpStream},
};

use crate::helpers::*;

/// A client socket that can hold only a little unread data, from `source`.
pub async fn small_socket(to: SocketAddr, source: [u8; 4]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until `needle` has been seen (bounded by [`WAIT`]).
pub async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !buf.windows(needle.len()).any(|w| w == needle) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {:?} in {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(buf)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed before {:?}: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Everything until the server closes or resets (bounded by [`WAIT`]).
pub async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => panic!(
                "the server did not close: {}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until the scrape satisfies `ok` (bounded by [`WAIT`]).
pub async fn wait_metrics(edge: &TestEdge, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = edge.metrics().await;
        if ok(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The JSON error code of a whole raw answer, checking the node header.
pub fn raw_error(answer: &str, node: &str) -> (u16, String) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status = head[9..12].parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nx-edge-node: {node}\r\n")),
        "{head}"
    );
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {answer}"));
    (status, json["error"]["code"].as_str().unwrap().to_owned())
}
