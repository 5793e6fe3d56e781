//! The settings of phone identity (docs/integration.md): which issuers'
//! tokens auth trusts and where their keys come from, which algorithms,
//! how keys are cached, and which claims name the user. Flattened into
//! [`super::AuthConfig`]: the same flags and variables.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::{invalid, ConfigError};
use crate::identity::claims::{ClaimMapping, ACCOUNT_CLAIMS};
use crate::identity::discovery::{check_url, KeySource};
use crate::identity::jwks::parse_algorithm;

#[derive(Debug, Clone, Args)]
pub struct IdentityConfig {
    /// Issuers whose tokens phones present, comma-separated. Each entry is
    /// the issuer (`iss`), alone (keys found by OpenID discovery) or followed
    /// by `jwks_uri=URL` or `jwks_file=PATH`, and optionally `audience=AUD`
    /// (else QRLOGIN_USER_TOKEN_AUDIENCE).
    #[arg(long, env = "QRLOGIN_TRUSTED_ISSUERS", default_value = "")]
    pub trusted_issuers: String,
    /// Extra PEM CA bundle for the issuers' HTTPS (a private CA); the
    /// system's roots are trusted too.
    #[arg(long, env = "QRLOGIN_TRUSTED_ISSUERS_CA_FILE")]
    pub trusted_issuers_ca_file: Option<PathBuf>,
    /// Algorithms phone tokens may use: a subset of RS256, PS256, ES256, EdDSA.
    #[arg(
        long,
        env = "QRLOGIN_USER_TOKEN_ALGORITHMS",
        default_value = "RS256,PS256,ES256,EdDSA"
    )]
    pub user_token_algorithms: String,
    /// The claim holding the user id.
    #[arg(long, env = "QRLOGIN_USER_ID_CLAIM", default_value = "sub")]
    pub user_id_claim: String,
    /// The claim the browser shows to tell accounts apart: `sub`,
    /// `preferred_username` or `email` (then `email_verified` must be true).
    #[arg(
        long,
        env = "QRLOGIN_USER_ACCOUNT_CLAIM",
        default_value = "preferred_username"
    )]
    pub user_account_claim: String,
    /// A free-text name shown in front of the account (`Alice (alice)`);
    /// empty: none.
    #[arg(long, env = "QRLOGIN_USER_NAME_CLAIM", default_value = "name")]
    pub user_name_claim: String,
    /// Show the account masked (`a***e@example.com`).
    #[arg(long, env = "QRLOGIN_USER_ACCOUNT_MASK", default_value_t = false, action = clap::ArgAction::Set)]
    pub user_account_mask: bool,
    /// A key set younger than this answers without a fetch.
    #[arg(long, env = "QRLOGIN_JWKS_MAX_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub jwks_max_age: Duration,
    /// Fetches of one issuer's keys (an unknown `kid`, an old set) are at
    /// least this far apart.
    #[arg(long, env = "QRLOGIN_JWKS_MIN_REFRESH_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub jwks_min_refresh_interval: Duration,
    /// How long past QRLOGIN_JWKS_MAX_AGE the last set keeps verifying
    /// while the issuer cannot be reached.
    #[arg(long, env = "QRLOGIN_JWKS_MAX_STALE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub jwks_max_stale: Duration,
    /// Keys kept of one issuer's set.
    #[arg(long, env = "QRLOGIN_JWKS_MAX_KEYS", default_value_t = 16)]
    pub jwks_max_keys: usize,
    /// Timeout of one fetch (discovery document or key set).
    #[arg(long, env = "QRLOGIN_JWKS_FETCH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub jwks_fetch_timeout: Duration,
    /// DEVELOPMENT ONLY: allow http:// issuers and key URLs on a loopback
    /// address (a test provider on 127.0.0.1).
    #[arg(long, env = "QRLOGIN_DEV_ALLOW_HTTP_LOOPBACK_ISSUERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_allow_http_loopback_issuers: bool,
}

/// One trusted issuer, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSpec {
    pub issuer: String,
    pub audience: String,
    pub source: KeySource,
}

const VAR: &str = "QRLOGIN_TRUSTED_ISSUERS";
/// Trusted issuers at once, at most (a migration needs two or three).
const MAX_ISSUERS: usize = 8;

impl IdentityConfig {
    /// The entries of QRLOGIN_TRUSTED_ISSUERS, with `default_audience`
    /// where an entry names none.
    pub fn issuers(&self, default_audience: &str) -> Result<Vec<IssuerSpec>, ConfigError> {
        let mut specs: Vec<IssuerSpec> = Vec::new();
        for entry in self.trusted_issuers.split(',') {
            let mut words = entry.split_whitespace();
            let Some(issuer) = words.next() else {
                continue;
            };
            let mut spec = IssuerSpec {
                issuer: issuer.to_owned(),
                audience: default_audience.to_owned(),
                source: KeySource::Discovery,
            };
            for word in words {
                match word.split_once('=') {
                    Some(("jwks_uri", url)) if spec.source == KeySource::Discovery => {
                        check_url(url, self.dev_allow_http_loopback_issuers)
                            .map_err(|e| invalid(VAR, e.to_string()))?;
                        spec.source = KeySource::JwksUrl(url.to_owned());
                    }
                    Some(("jwks_file", path)) if spec.source == KeySource::Discovery => {
                        spec.source = KeySource::JwksFile(PathBuf::from(path));
                    }
                    Some(("audience", aud)) if !aud.is_empty() => spec.audience = aud.to_owned(),
                    _ => {
                        return Err(invalid(
                            VAR,
                            format!("{issuer}: `{word}`: expected one of jwks_uri=URL or jwks_file=PATH, and audience=AUD"),
                        ))
                    }
                }
            }
            if spec.source == KeySource::Discovery {
                // The issuer is where discovery starts: the same rules as a key URL.
                check_url(issuer, self.dev_allow_http_loopback_issuers)
                    .map_err(|e| invalid(VAR, e.to_string()))?;
            }
            if specs.iter().any(|s| s.issuer == spec.issuer) {
                return Err(invalid(VAR, format!("{issuer} is listed twice")));
            }
            specs.push(spec);
        }
        if specs.len() > MAX_ISSUERS {
            return Err(invalid(VAR, format!("at most {MAX_ISSUERS} issuers")));
        }
        Ok(specs)
    }

    /// The algorithms of QRLOGIN_USER_TOKEN_ALGORITHMS.
    pub fn algorithms(&self) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
        let mut algs = Vec::new();
        for name in self.user_token_algorithms.split(',').map(str::trim) {
            let alg = parse_algorithm(name).ok_or_else(|| {
                invalid(
                    "QRLOGIN_USER_TOKEN_ALGORITHMS",
                    format!("{name:?}: use RS256, PS256, ES256 or EdDSA (never none or HMAC)"),
                )
            })?;
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        Ok(algs)
    }

    pub fn claim_mapping(&self) -> ClaimMapping {
        ClaimMapping {
            id_claim: self.user_id_claim.trim().to_owned(),
            account_claim: self.user_account_claim.trim().to_owned(),
            name_claim: Some(self.user_name_claim.trim().to_owned()).filter(|c| !c.is_empty()),
            mask_account: self.user_account_mask,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.algorithms()?;
        if !ACCOUNT_CLAIMS.contains(&self.user_account_claim.trim()) {
            return Err(invalid(
                "QRLOGIN_USER_ACCOUNT_CLAIM",
                "must be sub, preferred_username or email",
            ));
        }
        if self.user_id_claim.trim().is_empty() {
            return Err(invalid("QRLOGIN_USER_ID_CLAIM", "must not be empty"));
        }
        let between = |name, value: Duration, low: Duration, high: Duration| {
            if value < low || value > high {
                Err(invalid(
                    name,
                    format!("must be between {low:?} and {high:?}"),
                ))
            } else {
                Ok(())
            }
        };
        let s = Duration::from_secs;
        between(
            "QRLOGIN_JWKS_MAX_AGE",
            self.jwks_max_age,
            s(1),
            s(24 * 3600),
        )?;
        between(
            "QRLOGIN_JWKS_MIN_REFRESH_INTERVAL",
            self.jwks_min_refresh_interval,
            Duration::from_millis(100),
            s(3600),
        )?;
        between(
            "QRLOGIN_JWKS_MAX_STALE",
            self.jwks_max_stale,
            s(0),
            s(7 * 24 * 3600),
        )?;
        between(
            "QRLOGIN_JWKS_FETCH_TIMEOUT",
            self.jwks_fetch_timeout,
            Duration::from_millis(100),
            s(60),
        )?;
        if !(1..=100).contains(&self.jwks_max_keys) {
            return Err(invalid("QRLOGIN_JWKS_MAX_KEYS", "must be 1 to 100"));
        }
        Ok(())
    }
}
