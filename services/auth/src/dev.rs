//! DEVELOPMENT ONLY: the `dev-keygen` and `dev-token` subcommands. They make
//! throw-away keys and user tokens for the demo cluster and the tests. A real
//! deployment gets its user tokens from its own identity provider.

use std::path::Path;

use crate::config::{DevKeygenArgs, DevTokenArgs};
use crate::token::{
    generate_key_pair, mint_dev_user_token, unix_now_secs, DevTokenRequest, KeyError,
};

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
}

/// File names inside the `--out` folder.
pub const USER_KEY: &str = "user-token.pem";
pub const USER_PUB: &str = "user-token.pub.pem";
pub const ACCESS_KEY: &str = "access-token.pem";
pub const ACCESS_PUB: &str = "access-token.pub.pem";

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

/// Writes two fresh Ed25519 key pairs (user tokens, access tokens) to a folder.
pub fn keygen(args: &DevKeygenArgs) -> Result<(), DevError> {
    std::fs::create_dir_all(&args.out).map_err(|source| DevError::Write {
        path: args.out.display().to_string(),
        source,
    })?;
    for name in [USER_KEY, USER_PUB, ACCESS_KEY, ACCESS_PUB] {
        let path = args.out.join(name);
        if path.exists() && !args.force {
            return Err(DevError::Exists(path.display().to_string()));
        }
    }
    for (key, public) in [(USER_KEY, USER_PUB), (ACCESS_KEY, ACCESS_PUB)] {
        let pair = generate_key_pair()?;
        write(&args.out.join(key), &pair.private_pem, true)?;
        write(&args.out.join(public), &pair.public_pem, false)?;
    }
    eprintln!(
        "development keys written to {} (not for production)",
        args.out.display()
    );
    Ok(())
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
