//! Where a trusted issuer's keys come from: OpenID Connect discovery
//! (`<issuer>/.well-known/openid-configuration`, whose `issuer` must be the
//! configured one, then its `jwks_uri`), a JWKS URL, a JWKS file, or a PEM
//! key (one Ed25519 key, as before discovery existed).
//!
//! Keys are trusted only over HTTPS: an `http://` URL is refused, unless the
//! development setting allows plain HTTP to a loopback address (tests run a
//! provider on 127.0.0.1). Redirects are not followed (one could leave
//! HTTPS), answers are bounded in size and time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::Url;

use super::cache::Fetch;
use super::jwks::{self, KeyKind, KeySet, TrustedKey};

/// Largest discovery document or key set read, in bytes.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Where one issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Discovery,
    JwksUrl(String),
    JwksFile(PathBuf),
    /// An Ed25519 public key in PEM (no `kid`).
    PemFile(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{url}: keys are fetched over https:// only (QRLOGIN_DEV_ALLOW_HTTP_LOOPBACK_ISSUERS allows http://127.0.0.1 in development)")]
    NotHttps { url: String },
    #[error("{url}: not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Whether a URL may carry keys: https://, or http:// to a loopback host
/// when `allow_http_loopback` (development only).
pub fn check_url(url: &str, allow_http_loopback: bool) -> Result<Url, SourceError> {
    let parsed = Url::parse(url).map_err(|e| SourceError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SourceError::BadUrl {
            url: url.to_owned(),
            reason: "no credentials in the URL".into(),
        });
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if allow_http_loopback && is_loopback(&parsed) => Ok(parsed),
        _ => Err(SourceError::NotHttps {
            url: url.to_owned(),
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The HTTP client every issuer shares: no redirects, a timeout, the
/// system's roots plus an optional CA file.
pub fn http_client(
    timeout: Duration,
    extra_ca: Option<&std::path::Path>,
) -> Result<reqwest::Client, SourceError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("qrlogin-auth/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).map_err(|e| SourceError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SourceError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })? {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| SourceError::Client(e.to_string()))
}

/// Fetches one issuer's key set from its [`KeySource`].
pub struct Fetcher {
    pub issuer: String,
    pub source: KeySource,
    /// `None` for keys read from files.
    pub client: Option<reqwest::Client>,
    pub allow_http_loopback: bool,
    pub max_keys: usize,
}

impl Fetch for Arc<Fetcher> {
    async fn fetch(&self) -> Result<KeySet, String> {
        let set = match &self.source {
            KeySource::Discovery => {
                let jwks_uri = self.discover().await?;
                self.get_set(&jwks_uri).await?
            }
            KeySource::JwksUrl(url) => self.get_set(url).await?,
            KeySource::JwksFile(path) => {
                let doc = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                jwks::parse(&doc, self.max_keys).map_err(|e| e.to_string())?
            }
            KeySource::PemFile(path) => pem_set(path)?,
        };
        if set.skipped > 0 {
            tracing::info!(issuer = %self.issuer, kept = set.keys.len(), skipped = set.skipped, "keys left out of the set (not signing keys we verify with, or over QRLOGIN_JWKS_MAX_KEYS)");
        }
        tracing::info!(issuer = %self.issuer, kids = ?set.kids(), "issuer keys fetched");
        Ok(set)
    }
}

impl Fetcher {
    /// The discovery document's `jwks_uri`, after checking its `issuer`.
    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc = self.get(&url).await?;
        let doc: serde_json::Value =
            serde_json::from_slice(&doc).map_err(|e| format!("{url}: not JSON: {e}"))?;
        let issuer = doc["issuer"].as_str().unwrap_or_default();
        if issuer != self.issuer {
            return Err(format!(
                "{url}: names the issuer {issuer:?}, not {:?}",
                self.issuer
            ));
        }
        doc["jwks_uri"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{url}: no jwks_uri"))
    }

    async fn get_set(&self, url: &str) -> Result<KeySet, String> {
        let doc = self.get(url).await?;
        jwks::parse(&doc, self.max_keys).map_err(|e| format!("{url}: {e}"))
    }

    /// A bounded GET of an https:// (or allowed loopback) URL.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let url = check_url(url, self.allow_http_loopback).map_err(|e| e.to_string())?;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| format!("{url}: no HTTP client"))?;
        let response = client
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("{url}: {e}"))?;
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The one key of a PEM file (Ed25519), without a `kid`.
fn pem_set(path: &std::path::Path) -> Result<KeySet, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = jsonwebtoken::DecodingKey::from_ed_pem(&pem)
        .map_err(|e| format!("{} is not an Ed25519 PEM key: {e}", path.display()))?;
    Ok(KeySet {
        keys: vec![Arc::new(TrustedKey {
            kid: None,
            kind: KeyKind::Ed25519,
            alg: None,
            key,
        })],
        skipped: 0,
    })
}

/// Checks a PEM key file at start (the process refuses to start without it).
pub fn check_pem(path: &std::path::Path) -> Result<(), SourceError> {
    pem_set(path)
        .map(|_| ())
        .map_err(|reason| SourceError::File {
            path: path.display().to_string(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_travel_over_https_only() {
        assert!(check_url("https://id.example.com/jwks", false).is_ok());
        for url in [
            "http://id.example.com/jwks",
            "http://127.0.0.1:8080/jwks",
            "ftp://id.example.com/jwks",
            "file:///etc/jwks.json",
        ] {
            assert!(
                matches!(check_url(url, false), Err(SourceError::NotHttps { .. })),
                "{url}"
            );
        }
        assert!(check_url("https://user:pw@id.example.com/", false).is_err());
    }

    #[test]
    fn the_dev_setting_allows_plain_http_to_loopback_only() {
        for url in [
            "http://127.0.0.1:8080/jwks",
            "http://[::1]:8080/jwks",
            "http://localhost:9/x",
        ] {
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        for url in ["http://10.0.0.1/jwks", "http://id.example.com/jwks"] {
            assert!(check_url(url, true).is_err(), "{url}");
        }
    }
}
