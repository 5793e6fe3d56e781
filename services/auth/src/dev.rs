//! DEVELOPMENT ONLY: the `dev-keygen`, `dev-token` and `dev-nats-config`
//! subcommands. They make throw-away keys, user tokens and a NATS
//! configuration for the demo cluster and the tests. A real deployment gets
//! its user tokens from its own identity provider and its secrets from
//! deploy/k8s/make-secrets.sh.

use std::path::Path;

use crate::config::{DevKeygenArgs, DevNatsConfigArgs, DevTokenArgs};
use crate::nats_accounts::{self, ClusterSettings, LameDuck, ServerSettings, ServerTls, User};
use crate::token::{
    generate_key_pair, mint_dev_user_token, unix_now_secs, DevTokenRequest, KeyError,
};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0} exists; pass --force to overwrite")]
    Exists(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path} does not hold a public nkey of a user (U...)")]
    BadPublicNkey { path: String },
    #[error("cannot generate an nkey: {0}")]
    Nkey(String),
}

/// File names inside the `--out` folder.
pub const USER_KEY: &str = "user-token.pem";
pub const USER_PUB: &str = "user-token.pub.pem";
pub const ACCESS_KEY: &str = "access-token.pem";
pub const ACCESS_PUB: &str = "access-token.pub.pem";
pub const NATS_AUTH_SEED: &str = "nats-auth.seed";
pub const NATS_AUTH_PUB: &str = "nats-auth.pub";
pub const NATS_EDGE_SEED: &str = "nats-edge.seed";
pub const NATS_EDGE_PUB: &str = "nats-edge.pub";
pub const RECORD_KEY: &str = "record.key";
/// auth's accepted tokens (QRLOGIN_SERVICE_TOKENS_FILE) and the edges' one
/// (QRLOGIN_AUTH_SERVICE_TOKEN_FILE): the same token here.
pub const SERVICE_TOKENS: &str = "service-tokens";
pub const SERVICE_TOKEN: &str = "service-token";

/// What one generated item writes: (file, content, private).
type Files = Vec<(&'static str, String, bool)>;
/// Makes the files of one item.
type Maker = fn() -> Result<Files, DevError>;

/// Every item dev-keygen makes, as the files it writes. Each item is written
/// whole or not at all.
fn items() -> Vec<(&'static [&'static str], Maker)> {
    vec![
        (&[USER_KEY, USER_PUB], || ed25519(USER_KEY, USER_PUB)),
        (&[ACCESS_KEY, ACCESS_PUB], || {
            ed25519(ACCESS_KEY, ACCESS_PUB)
        }),
        (&[NATS_AUTH_SEED, NATS_AUTH_PUB], || {
            nkey(NATS_AUTH_SEED, NATS_AUTH_PUB)
        }),
        (&[NATS_EDGE_SEED, NATS_EDGE_PUB], || {
            nkey(NATS_EDGE_SEED, NATS_EDGE_PUB)
        }),
        (&[RECORD_KEY], || {
            Ok(vec![(
                RECORD_KEY,
                crate::sealing::generate_key_text(),
                true,
            )])
        }),
        (&[SERVICE_TOKENS, SERVICE_TOKEN], || {
            let token = generate_service_token();
            Ok(vec![
                (SERVICE_TOKENS, format!("{token}\n"), true),
                (SERVICE_TOKEN, format!("{token}\n"), true),
            ])
        }),
    ]
}

/// 32 random bytes in hex: a service token (64 characters).
pub fn generate_service_token() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ed25519(private: &'static str, public: &'static str) -> Result<Files, DevError> {
    let pair = generate_key_pair()?;
    Ok(vec![
        (private, pair.private_pem, true),
        (public, pair.public_pem, false),
    ])
}

fn nkey(seed: &'static str, public: &'static str) -> Result<Files, DevError> {
    let pair = nkeys::KeyPair::new_user();
    let secret = pair.seed().map_err(|e| DevError::Nkey(e.to_string()))?;
    Ok(vec![
        (seed, format!("{secret}\n"), true),
        (public, format!("{}\n", pair.public_key()), false),
    ])
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), DevError> {
    let err = |source| DevError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(path, text).map_err(err)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

/// Writes fresh keys to a folder: Ed25519 pairs for user and access tokens,
/// nkey users for auth and edge. Refuses to overwrite unless `--force`;
/// `--keep-existing` writes only the items that are missing.
pub fn keygen(args: &DevKeygenArgs) -> Result<(), DevError> {
    std::fs::create_dir_all(&args.out).map_err(|source| DevError::Write {
        path: args.out.display().to_string(),
        source,
    })?;
    let items = items();
    if !args.force && !args.keep_existing {
        for (names, _) in &items {
            for name in *names {
                let path = args.out.join(name);
                if path.exists() {
                    return Err(DevError::Exists(path.display().to_string()));
                }
            }
        }
    }
    for (names, make) in items {
        if args.keep_existing && names.iter().all(|n| args.out.join(n).exists()) {
            continue;
        }
        for (name, text, private) in make()? {
            write(&args.out.join(name), &text, private)?;
        }
    }
    eprintln!(
        "development keys written to {} (not for production)",
        args.out.display()
    );
    Ok(())
}

fn read_public_nkey(path: &Path) -> Result<String, DevError> {
    let text = std::fs::read_to_string(path).map_err(|source| DevError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let key = text.trim();
    match nkeys::KeyPair::from_public_key(key) {
        Ok(_) if key.starts_with('U') => Ok(key.to_owned()),
        _ => Err(DevError::BadPublicNkey {
            path: path.display().to_string(),
        }),
    }
}

/// A nats.conf for one local server: the accounts and users of
/// [`nats_accounts`] with the public nkeys of a dev-keygen folder.
pub fn nats_config(args: &DevNatsConfigArgs) -> Result<String, DevError> {
    let users = [
        User {
            name: "auth".into(),
            nkey: read_public_nkey(&args.keys.join(NATS_AUTH_PUB))?,
            permissions: nats_accounts::auth_permissions(&[&args.kv_bucket, &args.limits_bucket]),
        },
        User {
            name: "edge".into(),
            nkey: read_public_nkey(&args.keys.join(NATS_EDGE_PUB))?,
            permissions: nats_accounts::edge_permissions(&args.subject_prefix),
        },
    ];
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_file: cert.display().to_string(),
            key_file: key.display().to_string(),
            ca_file: args.tls_client_ca.as_ref().map(|p| p.display().to_string()),
            verify_clients: args.tls_client_ca.is_some(),
        }),
        _ => None,
    };
    let cluster = match (&args.cluster_name, args.cluster_listen) {
        (Some(name), Some(listen)) => Some(ClusterSettings {
            name: name.clone(),
            host: listen.ip().to_string(),
            port: listen.port(),
            routes: args.routes.clone(),
            tls: match (&args.cluster_tls_ca, &args.tls_cert, &args.tls_key) {
                (Some(ca), Some(cert), Some(key)) => Some(ServerTls {
                    cert_file: cert.display().to_string(),
                    key_file: key.display().to_string(),
                    ca_file: Some(ca.display().to_string()),
                    verify_clients: true,
                }),
                _ => None,
            },
        }),
        _ => None,
    };
    let lame_duck = args.lame_duck_duration.map(|duration| LameDuck {
        duration,
        grace_period: args
            .lame_duck_grace_period
            .unwrap_or(Duration::from_secs(10)),
    });
    let server = ServerSettings {
        host: args.listen.ip().to_string(),
        port: args.listen.port(),
        http_port: args.http_port,
        server_name: args.server_name.clone(),
        store_dir: args.store_dir.display().to_string(),
        tls,
        cluster,
        lame_duck,
    };
    Ok(nats_accounts::render_server(&server, &users))
}

/// A user token signed with a development key.
pub fn token(args: &DevTokenArgs) -> Result<String, DevError> {
    let pem = std::fs::read(&args.key).map_err(|source| DevError::Read {
        path: args.key.display().to_string(),
        source,
    })?;
    let name = args.name.clone().unwrap_or_else(|| args.sub.clone());
    Ok(mint_dev_user_token(
        &pem,
        &DevTokenRequest {
            user_id: &args.sub,
            display_name: &name,
            issuer: &args.issuer,
            audience: &args.audience,
            ttl: args.ttl,
            issued_at: unix_now_secs(),
        },
    )?)
}
