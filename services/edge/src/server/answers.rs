//! The front server's own answers, given where no router runs: a first
//! head that cannot be read or is over the limits, a connection over the
//! pre-head caps, and (through [`super::hyper_io`]) hyper's refusals of a
//! later head. They are the router's JSON errors (`error.rs` maps them),
//! with the node header, rendered once as bytes.

use std::sync::Arc;

use axum::body::Bytes;

use crate::{error::ApiError, metrics::Metrics};

pub struct Answers {
    pub malformed: Bytes,
    pub too_large: Bytes,
    pub busy: Bytes,
    pub metrics: Arc<Metrics>,
}

impl Answers {
    pub fn new(node: &str, metrics: Arc<Metrics>) -> Self {
        Self {
            malformed: render(&ApiError::MalformedRequest, node),
            too_large: render(&ApiError::HeadTooLarge, node),
            busy: render(&ApiError::TooManyConnections, node),
            metrics,
        }
    }

    /// The answer and its code for a refusal hyper writes with `status`.
    pub fn for_hyper_status(&self, status: &[u8]) -> Option<(&Bytes, &'static str)> {
        match status {
            b"400" => Some((&self.malformed, ApiError::MalformedRequest.code())),
            b"414" | b"431" => Some((&self.too_large, ApiError::HeadTooLarge.code())),
            _ => None,
        }
    }
}

/// A whole `connection: close` response for `error`.
fn render(error: &ApiError, node: &str) -> Bytes {
    let body = error.body().to_string();
    let status = error.status();
    Bytes::from(format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-edge-node: {node}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\n\
         connection: close\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_whole_json_responses_with_the_node() {
        let a = Answers::new("edge-9", Arc::new(Metrics::default()));
        let text = String::from_utf8(a.too_large.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nx-edge-node: edge-9\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "head_too_large");
        assert!(String::from_utf8(a.busy.to_vec())
            .unwrap()
            .starts_with("HTTP/1.1 503 "));
        assert!(String::from_utf8(a.malformed.to_vec())
            .unwrap()
            .starts_with("HTTP/1.1 400 "));
    }
}
