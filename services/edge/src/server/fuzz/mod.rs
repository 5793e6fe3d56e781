//! Property test of the front server against hyper, on stable Rust:
//! generated requests (valid, broken, mutated, over the limits), delivered
//! in arbitrary pieces, must never panic the front (head reader, direct
//! path, hyper behind it) and must get the answers a plain hyper with the
//! same limits gives for the same bytes: the same status and framing
//! (length, chunked, until close) for every response, the same body for
//! every response of the router, until the front closes the connection
//! (the direct path always does after its response). Every answer of the
//! front carries `X-Edge-Node`, and every error a JSON body with a code.
//!
//! Time is paused: header timeouts and lingering pass instantly.
//!
//! `cargo test` runs 300 cases from a fixed seed (printed). By hand, longer
//! and from a random seed (also printed, to replay a failure):
//!
//! ```text
//! QRLOGIN_FUZZ_ITERATIONS=100000 QRLOGIN_FUZZ_SEED=random \
//!   cargo test -p qrlogin-edge --release --lib server::fuzz -- --nocapture
//! QRLOGIN_FUZZ_SEED=<seed> ...     # replays a run
//! ```

mod input;
mod output;

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderName, HeaderValue, Request},
    response::{
        sse::{Event, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Router,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rand::{rngs::StdRng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tower_http::set_header::SetResponseHeaderLayer;

use super::{connection, http1, Front};
use crate::{config::EdgeConfig, error::ApiError, metrics::Metrics};
use input::case;
use output::{answers, compare, show, shown};

const DEFAULT_ITERATIONS: usize = 300;
const DEFAULT_SEED: u64 = 0x5eed_0fed;
/// Longest a case may run (paused time): a request whose body never
/// completes holds hyper until then, on both sides alike.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// A client that delivers its bytes in the given pieces, one per read, and
/// then waits forever (never closes); records everything written to it.
struct Scripted {
    pieces: VecDeque<Vec<u8>>,
    out: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(piece) = self.pieces.front_mut() else {
            return Poll::Pending;
        };
        let n = piece.len().min(buf.remaining());
        buf.put_slice(&piece[..n]);
        piece.drain(..n);
        if piece.is_empty() {
            self.pieces.pop_front();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut out = self.out.lock().unwrap();
        let mut n = 0;
        for b in bufs {
            out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const NODE: &str = "fuzz-node";

/// A router shaped like the edge's: a stream route (finite SSE), a
/// WebSocket route that refuses, JSON routes with and without bodies, the
/// JSON 404 and 405, the node header.
fn stub_app() -> Router {
    async fn events() -> Response {
        let events = futures::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Event::default().retry(Duration::from_secs(2))),
            Ok(Event::default()
                .id("7")
                .event("PENDING")
                .data("{\"state\":\"PENDING\"}")),
        ]);
        Sse::new(events).into_response()
    }
    async fn ws() -> ApiError {
        ApiError::InvalidArgument("not a WebSocket upgrade".into())
    }
    async fn snapshot() -> Response {
        axum::Json(serde_json::json!({ "state": "PENDING", "version": 7 })).into_response()
    }
    async fn create(body: Bytes) -> Response {
        (
            axum::http::StatusCode::CREATED,
            axum::Json(serde_json::json!({ "got": body.len() })),
        )
            .into_response()
    }
    async fn not_found() -> ApiError {
        ApiError::NotFound("no such route".into())
    }
    async fn method_not_allowed() -> ApiError {
        ApiError::MethodNotAllowed
    }
    Router::new()
        .route("/v1/login-sessions", post(create))
        .route("/v1/login-sessions/{id}", get(snapshot).delete(snapshot))
        .route("/v1/login-sessions/{id}/events", get(events))
        .route("/v1/login-sessions/{id}/ws", get(ws))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .layer(axum::middleware::map_response(|r: Response| async move {
            crate::error::as_json_error(r, 4096)
        }))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("x-edge-node"),
            HeaderValue::from_static(NODE),
        ))
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// The front's answer to `pieces`.
async fn through_front(front: &Arc<Front>, pieces: &[Vec<u8>]) -> Vec<u8> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let io = Scripted {
        pieces: pieces.iter().cloned().collect(),
        out: out.clone(),
    };
    let waiting = (
        front
            .heads
            .try_enter(peer().ip(), true)
            .expect("a free slot"),
        front.metrics.pre_head(),
    );
    let _ = tokio::time::timeout(CASE_LIMIT, connection(io, peer(), front.clone(), waiting)).await;
    let bytes = out.lock().unwrap().clone();
    bytes
}

/// Plain hyper's answer to `pieces`.
async fn through_hyper(app: &Router, pieces: &[Vec<u8>]) -> Vec<u8> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let io = Scripted {
        pieces: pieces.iter().cloned().collect(),
        out: out.clone(),
    };
    let service = TowerToHyperService::new(app.clone().map_request(
        |req: Request<hyper::body::Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer()));
            req
        },
    ));
    let conn = http1()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let _ = tokio::time::timeout(CASE_LIMIT, conn).await;
    let bytes = out.lock().unwrap().clone();
    bytes
}

#[test]
fn the_front_answers_like_hyper() {
    let iterations = std::env::var("QRLOGIN_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let seed = match std::env::var("QRLOGIN_FUZZ_SEED").ok().as_deref() {
        None | Some("") => DEFAULT_SEED,
        Some("random") => rand::random(),
        Some(s) => s.parse().expect("QRLOGIN_FUZZ_SEED: a number or `random`"),
    };
    println!("front fuzz: {iterations} cases from QRLOGIN_FUZZ_SEED={seed}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let app = stub_app();
    let mut config = EdgeConfig::defaults();
    config.max_pre_head_connections = 4;
    let front = rt.block_on(async {
        Front::new(
            app.clone(),
            &config,
            NODE,
            Arc::new(Metrics::default()),
            CancellationToken::new(),
            TaskTracker::new(),
        )
    });
    let mut rng = StdRng::seed_from_u64(seed);
    // What the cases reached, by the front's first answer.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..iterations {
        let pieces = case(&mut rng);
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                (
                    through_front(&front, &pieces).await,
                    through_hyper(&app, &pieces).await,
                )
            })
        }));
        let (ours, theirs) = match run {
            Ok(outs) => outs,
            Err(_) => panic!("case {i} of seed {seed} panicked; input: {}", show(&pieces)),
        };
        let first = answers(&ours)
            .ok()
            .and_then(|a| a.into_iter().next())
            .map(|a| format!("{} {:?}", a.status, a.framing))
            .unwrap_or_else(|| "none".into());
        *seen.entry(first).or_default() += 1;
        if let Err(why) = compare(&ours, &theirs) {
            panic!(
                "case {i} of seed {seed}: {why}\ninput: {}\nfront: {}\nhyper: {}",
                show(&pieces),
                shown(&ours),
                shown(&theirs)
            );
        }
    }
    println!("front fuzz: first answers {seen:?}");
    if iterations >= DEFAULT_ITERATIONS {
        // The generator must keep reaching every kind of answer.
        for kind in [
            "200 Chunked",
            "400 Length",
            "431 Length",
            "404 Length",
            "405 Length",
            "none",
        ] {
            assert!(seen.contains_key(kind), "no case answered {kind}: {seen:?}");
        }
    }
}
