//! How auth proves who it is to NATS: the nkey seed and TLS files, read and
//! checked once before anything is bound, then applied to every connection.
//! The seed is never printed (its `Debug` is redacted) and no URL goes into
//! an error or a log line.

use std::path::{Path, PathBuf};

use crate::config::AuthConfig;
use crate::nats_accounts::AUTH_INBOX_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("QRLOGIN_NATS_NKEY_SEED_FILE: cannot read {path}: {source}")]
    ReadSeed {
        path: String,
        source: std::io::Error,
    },
    #[error("QRLOGIN_NATS_NKEY_SEED_FILE: {path} does not hold an nkey user seed (SU...)")]
    BadSeed { path: String },
    #[error("{var}: cannot read {path}: {source}")]
    ReadFile {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// An nkey user seed. Its `Debug` shows only the public key.
#[derive(Clone)]
pub struct NkeySeed {
    seed: String,
    public: String,
}

impl std::fmt::Debug for NkeySeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NkeySeed(public {})", self.public)
    }
}

impl NkeySeed {
    /// Reads and checks a seed file (one `SU...` line).
    pub fn from_file(path: &Path) -> Result<Self, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::ReadSeed {
            path: path.display().to_string(),
            source,
        })?;
        let seed = text.trim().to_owned();
        let bad = || AccessError::BadSeed {
            path: path.display().to_string(),
        };
        if !seed.starts_with("SU") {
            return Err(bad());
        }
        let pair = nkeys::KeyPair::from_seed(&seed).map_err(|_| bad())?;
        Ok(Self {
            public: pair.public_key(),
            seed,
        })
    }

    /// The public key (`U...`), the name nats-server knows this user by.
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

/// Credentials and TLS settings of auth's NATS client.
#[derive(Debug, Clone, Default)]
pub struct NatsAccess {
    seed: Option<NkeySeed>,
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

fn readable(var: &'static str, path: &Path) -> Result<PathBuf, AccessError> {
    std::fs::File::open(path).map_err(|source| AccessError::ReadFile {
        var,
        path: path.display().to_string(),
        source,
    })?;
    Ok(path.to_owned())
}

impl NatsAccess {
    pub fn load(c: &AuthConfig) -> Result<Self, AccessError> {
        let seed = c
            .nats_nkey_seed_file
            .as_deref()
            .map(NkeySeed::from_file)
            .transpose()?;
        let ca_file = c
            .nats_tls_ca_file
            .as_deref()
            .map(|p| readable("QRLOGIN_NATS_TLS_CA_FILE", p))
            .transpose()?;
        let client_cert = match (&c.nats_tls_cert_file, &c.nats_tls_key_file) {
            (Some(cert), Some(key)) => Some((
                readable("QRLOGIN_NATS_TLS_CERT_FILE", cert)?,
                readable("QRLOGIN_NATS_TLS_KEY_FILE", key)?,
            )),
            _ => None,
        };
        Ok(Self {
            seed,
            ca_file,
            client_cert,
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.seed.is_some()
    }

    /// Connection options with the credentials, TLS and auth's own inbox
    /// prefix (the only subjects auth may subscribe to).
    pub fn options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new().custom_inbox_prefix(AUTH_INBOX_PREFIX);
        if let Some(seed) = &self.seed {
            options = options.nkey(seed.seed.clone());
        }
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        options
    }
}
