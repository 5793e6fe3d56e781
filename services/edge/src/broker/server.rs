//! Where and how to connect: the server addresses (configured, and those
//! the servers announce), credentials and TLS, loaded and checked once; and
//! the pool the client goes round when it (re)connects.

use std::{fmt, sync::Arc, time::Duration};

use super::{conn::Info, tls, BrokerConfig, BrokerError};

/// Servers learnt from one INFO are kept up to this many (a cluster of
/// more members is reached through those); the rest of a longer list is
/// ignored.
const MAX_LEARNT: usize = 32;

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

/// The servers to try, in turn: the configured ones, always, then those
/// the last INFO announced (`connect_urls`). Every INFO that names servers
/// replaces what earlier ones named, so a member that left the cluster
/// (lame duck mode, a pod's old address) is forgotten instead of costing a
/// connect attempt in every later round.
pub(super) struct Pool {
    configured: Vec<Server>,
    learnt: Vec<Server>,
    next: usize,
}

impl Pool {
    pub(super) fn new(configured: Vec<Server>) -> Self {
        Self {
            configured,
            learnt: Vec::new(),
            next: 0,
        }
    }

    fn len(&self) -> usize {
        self.configured.len() + self.learnt.len()
    }

    /// The next server to try, and whether it ends a round (every server
    /// tried once since the last round ended).
    pub(super) fn next(&mut self) -> (Server, bool) {
        let i = self.next % self.len();
        self.next = i + 1;
        let server = match self.configured.get(i) {
            Some(s) => s.clone(),
            None => self.learnt[i - self.configured.len()].clone(),
        };
        (server, self.next == self.len())
    }

    /// Whether a server other than `current` is known.
    pub(super) fn has_other(&self, current: &Server) -> bool {
        self.configured
            .iter()
            .chain(&self.learnt)
            .any(|s| s != current)
    }

    /// Takes the servers `info` announces (with `current`'s scheme), in
    /// place of those announced before; an INFO that names none changes
    /// nothing.
    pub(super) fn learn(&mut self, info: &Info, current: &Server) {
        if info.connect_urls.is_empty() {
            return;
        }
        let mut learnt = Vec::new();
        for url in &info.connect_urls {
            if learnt.len() == MAX_LEARNT {
                break;
            }
            if let Ok(mut s) = parse_server(url) {
                s.tls = current.tls;
                if !self.configured.contains(&s) && !learnt.contains(&s) {
                    learnt.push(s);
                }
            }
        }
        if learnt != self.learnt {
            let names: Vec<String> = learnt.iter().map(Server::to_string).collect();
            tracing::info!(servers = ?names, "NATS servers announced");
            self.learnt = learnt;
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
    fn info(urls: &[String]) -> Info {
        Info {
            connect_urls: urls.to_vec(),
            ..Info::default()
        }
    }

    /// One whole round, from its start.
    fn round(pool: &mut Pool) -> Vec<String> {
        while pool.next % pool.len() != 0 {
            pool.next();
        }
        let mut seen = Vec::new();
        loop {
            let (s, last) = pool.next();
            seen.push(s.to_string());
            if last {
                return seen;
            }
        }
    }

    #[test]
    fn the_pool_goes_round_configured_then_announced_servers() {
        let a = parse_server("nats://10.0.0.1:4222").unwrap();
        let mut pool = Pool::new(vec![a.clone()]);
        assert!(!pool.has_other(&a), "alone: nowhere to move to");
        assert_eq!(round(&mut pool), ["nats://10.0.0.1:4222"]);
        let urls = ["10.0.0.1:4222", "10.0.0.2:4222", "10.0.0.3:4222"].map(String::from);
        pool.learn(&info(&urls), &a);
        assert!(pool.has_other(&a));
        assert_eq!(
            round(&mut pool),
            [
                "nats://10.0.0.1:4222",
                "nats://10.0.0.2:4222",
                "nats://10.0.0.3:4222"
            ]
        );
        // A member left and another came (a pod's new address): the next
        // INFO replaces what the last one said; the configured one stays.
        let urls = ["10.0.0.2:4222", "10.0.0.4:4222"].map(String::from);
        pool.learn(&info(&urls), &a);
        assert_eq!(
            round(&mut pool),
            [
                "nats://10.0.0.1:4222",
                "nats://10.0.0.2:4222",
                "nats://10.0.0.4:4222"
            ]
        );
        // An INFO without servers (an update of something else) keeps them.
        pool.learn(&info(&[]), &a);
        assert_eq!(round(&mut pool).len(), 3);
        // Announced servers take the scheme of the one that announced them.
        let t = parse_server("tls://10.0.0.1:4222").unwrap();
        pool.learn(&info(&["10.0.0.5:4222".into()]), &t);
        assert_eq!(round(&mut pool)[1], "tls://10.0.0.5:4222");
    }

    #[test]
    fn a_hostile_info_is_bounded() {
        let a = parse_server("nats://10.0.0.1:4222").unwrap();
        let mut pool = Pool::new(vec![a.clone()]);
        let mut urls: Vec<String> = (0..1000)
            .map(|i| format!("10.1.{}.{}:4222", i / 250, i % 250))
            .collect();
        urls.insert(0, "nats://user:secret@10.9.9.9:4222".into());
        urls.insert(0, "http://10.9.9.9".into());
        urls.insert(0, "nats://:4222".into());
        pool.learn(&info(&urls), &a);
        let servers = round(&mut pool);
        assert_eq!(servers.len(), 1 + MAX_LEARNT);
        assert!(
            servers.iter().all(|s| !s.contains("10.9.9.9")),
            "{servers:?}"
        );
        // The whole INFO line is bounded too (proto::MAX_CONTROL_LINE).
    }
}
