//! Where and how to connect: the server addresses (configured, and those
//! the servers announce), credentials and TLS, loaded and checked once.

use std::{fmt, sync::Arc, time::Duration};

use super::{conn::Info, tls, BrokerConfig, BrokerError};

/// Servers learnt from INFO are kept up to this many.
const MAX_SERVERS: usize = 64;

/// One NATS server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Server {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Parses `nats://host:port`, `tls://host:port` or `host[:port]`.
pub(super) fn parse_server(text: &str) -> Result<Server, BrokerError> {
    let text = text.trim();
    let (tls, rest) = if let Some(r) = text.strip_prefix("tls://") {
        (true, r)
    } else if let Some(r) = text.strip_prefix("nats://") {
        (false, r)
    } else if text.contains("://") {
        return Err(BrokerError::Url("only nats:// and tls:// URLs".into()));
    } else {
        (false, text)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(BrokerError::Url(
            "credentials in URLs are refused; use QRLOGIN_NATS_NKEY_SEED_FILE".into(),
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| BrokerError::Url("unclosed [".into()))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err(BrokerError::Url("a URL needs a host".into()));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| BrokerError::Url("port must be a number".into()))?,
        None => 4222,
    };
    Ok(Server {
        host: host.to_owned(),
        port,
        tls,
    })
}

/// Checked, loaded connection settings.
pub(super) struct Settings {
    pub(super) servers: Vec<Server>,
    pub(super) tls: Option<Arc<rustls::ClientConfig>>,
    pub(super) nkey: Option<Arc<nkeys::KeyPair>>,
    pub(super) name: String,
    pub(super) ping_interval: Duration,
}

impl Settings {
    pub(super) fn from_config(c: &BrokerConfig) -> Result<Self, BrokerError> {
        let servers = c
            .urls
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(parse_server)
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(BrokerError::Url("no server".into()));
        }
        let wants_tls =
            servers.iter().any(|s| s.tls) || c.tls_ca_file.is_some() || c.tls_cert_file.is_some();
        let tls = if wants_tls {
            Some(tls::client_config(
                c.tls_ca_file.as_deref(),
                c.tls_cert_file.as_deref(),
                c.tls_key_file.as_deref(),
            )?)
        } else {
            None
        };
        let nkey = match &c.nkey_seed_file {
            Some(path) => {
                let seed = std::fs::read_to_string(path)
                    .map_err(|e| BrokerError::Seed(format!("{}: {e}", path.display())))?;
                // A user seed (`SU...`): the server only ever sees a
                // signature, and a malformed seed would fail every connect.
                let seed = seed.trim();
                let pair = nkeys::KeyPair::from_seed(seed)
                    .ok()
                    .filter(|_| seed.starts_with("SU"))
                    .ok_or_else(|| {
                        BrokerError::Seed(format!("{} is not an nkey user seed", path.display()))
                    })?;
                Some(Arc::new(pair))
            }
            None => None,
        };
        Ok(Self {
            servers,
            tls,
            nkey,
            name: c.name.clone(),
            ping_interval: c.ping_interval,
        })
    }
}

/// Adds the servers that INFO names (`connect_urls`) to those we know.
pub(super) fn learn(info: &Info, current: &Server, known: &mut Vec<Server>) {
    for url in &info.connect_urls {
        if known.len() >= MAX_SERVERS {
            break;
        }
        if let Ok(mut s) = parse_server(url) {
            s.tls = current.tls;
            if !known.contains(&s) {
                tracing::info!(server = %s, "learnt a NATS server");
                known.push(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_credentials_are_refused() {
        let s = parse_server("nats://127.0.0.1:4333").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("127.0.0.1", 4333, false));
        let s = parse_server("tls://nats.example").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("nats.example", 4222, true)
        );
        let s = parse_server("[::1]:4222").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 4222));
        assert_eq!(s.to_string(), "nats://[::1]:4222");
        assert!(parse_server("nats://user:pass@host:4222").is_err());
        assert!(parse_server("http://host").is_err());
        assert!(parse_server("nats://:4222").is_err());
    }
}
