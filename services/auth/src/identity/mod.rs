//! Phone identity: verifying the tokens of the service's own identity
//! provider(s) and naming their user.
//!
//! - [`jwks`]: the algorithm allowlist and the keys of a JWK Set;
//! - [`discovery`]: where an issuer's keys come from (OpenID discovery, a
//!   JWKS URL or file, a PEM key) and the HTTPS-only rule;
//! - [`cache`]: each issuer's key cache and its refresh policy;
//! - [`claims`]: the user id and the name the browser shows.
//!
//! A token is checked in this order: its header's `alg` is allowed; its
//! (unverified) `iss` names a trusted issuer, which picks the keys; the key
//! named by `kid` in that issuer's set verifies `alg`; then the signature,
//! `iss`, `aud`, `exp`, `nbf` (5 s leeway), `iat` (required, not in the
//! future, at most the maximum lifetime before `exp`), and the claims that
//! name the user.

pub mod cache;
pub mod claims;
pub mod discovery;
pub mod jwks;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde_json::{Map, Value};

use crate::config::{AuthConfig, IssuerSpec};
use crate::domain::PhoneUser;
use crate::token::{unix_now_secs, TokenError};
use cache::{CachePolicy, Clock, KeyCache, LookupError, SystemClock};
use claims::ClaimMapping;
use discovery::{Fetcher, KeySource, SourceError};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// A trusted issuer and its keys.
struct Issuer {
    issuer: String,
    audience: String,
    /// A PEM key has no `kid`: the token's is not compared.
    pem: bool,
    keys: KeyCache<Arc<Fetcher>>,
}

/// Verifies phone users' bearer tokens against every trusted issuer.
pub struct UserTokens {
    issuers: Vec<Issuer>,
    algorithms: Vec<Algorithm>,
    mapping: ClaimMapping,
    max_lifetime: Duration,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTokens")
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// Only the issuer, read before the signature is checked, to pick the keys.
#[derive(serde::Deserialize)]
struct Unverified {
    #[serde(default)]
    iss: Option<String>,
}

impl UserTokens {
    /// From the configuration (already validated); reads PEM keys now, and
    /// fetches nothing yet (see [`UserTokens::prefetch`]).
    pub fn from_config(c: &AuthConfig) -> Result<Self, IdentityError> {
        let id = &c.identity;
        let specs = c.trusted_issuers()?;
        // Only issuers reached over HTTP need the client (loading the
        // system's roots costs time at every start).
        let needs_http = specs
            .iter()
            .any(|s| matches!(s.source, KeySource::Discovery | KeySource::JwksUrl(_)));
        let client = if needs_http {
            Some(discovery::http_client(
                id.jwks_fetch_timeout,
                id.trusted_issuers_ca_file.as_deref(),
            )?)
        } else {
            None
        };
        let policy = CachePolicy {
            max_age: id.jwks_max_age,
            min_refresh: id.jwks_min_refresh_interval,
            max_stale: id.jwks_max_stale,
        };
        Self::new(
            specs,
            id.algorithms()?,
            id.claim_mapping(),
            c.user_token_max_lifetime,
            Settings {
                client,
                policy,
                allow_http_loopback: id.dev_allow_http_loopback_issuers,
                max_keys: id.jwks_max_keys,
                clock: Arc::new(SystemClock),
            },
        )
    }

    pub fn new(
        specs: Vec<IssuerSpec>,
        algorithms: Vec<Algorithm>,
        mapping: ClaimMapping,
        max_lifetime: Duration,
        settings: Settings,
    ) -> Result<Self, IdentityError> {
        let issuers = specs
            .into_iter()
            .map(|spec| {
                if let KeySource::PemFile(path) = &spec.source {
                    discovery::check_pem(path)?;
                }
                let pem = matches!(spec.source, KeySource::PemFile(_));
                let fetcher = Arc::new(Fetcher {
                    issuer: spec.issuer.clone(),
                    source: spec.source,
                    client: settings.client.clone(),
                    allow_http_loopback: settings.allow_http_loopback,
                    max_keys: settings.max_keys,
                });
                Ok(Issuer {
                    issuer: spec.issuer,
                    audience: spec.audience,
                    pem,
                    keys: KeyCache::new(fetcher, settings.policy, settings.clock.clone()),
                })
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        Ok(Self {
            issuers,
            algorithms,
            mapping,
            max_lifetime,
        })
    }

    /// Fetches every issuer's keys once, in the background, so the first
    /// scan does not wait for it. Failures are logged; lookups retry.
    pub fn prefetch(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            for issuer in &this.issuers {
                issuer.keys.refresh_now().await;
            }
        });
    }

    /// Verifies `authorization` metadata (`Bearer <JWT>`) and returns the user.
    pub async fn verify_header(&self, header: Option<&str>) -> Result<PhoneUser, TokenError> {
        let header = header.ok_or(TokenError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::MalformedHeader)?;
        self.verify(token).await
    }

    pub async fn verify(&self, token: &str) -> Result<PhoneUser, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        // The algorithm first, by name: `none` or `HS256` are not even
        // algorithms to the parser below, and must be refused as such.
        let named = header_alg(token).ok_or_else(|| invalid("not a JWT"))?;
        let allowed = jwks::parse_algorithm(&named).filter(|a| self.algorithms.contains(a));
        let Some(alg) = allowed else {
            return Err(TokenError::Invalid(format!(
                "algorithm {named:?} is not accepted (allowed: {})",
                self.algorithms
                    .iter()
                    .map(|a| jwks::algorithm_name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let header = decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let unverified: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| invalid("not a JWT"))?;
        let iss = unverified
            .iss
            .ok_or_else(|| invalid("missing claim `iss`"))?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| invalid("wrong issuer: not a trusted issuer"))?;
        let kid = if issuer.pem {
            None
        } else {
            Some(
                header
                    .kid
                    .as_deref()
                    .ok_or_else(|| invalid("no `kid` in the header"))?,
            )
        };
        let key = issuer.keys.key(kid, alg).await.map_err(|e| match e {
            LookupError::UnknownKey => {
                invalid("bad signature: no key of the issuer with this kid and algorithm")
            }
            LookupError::Unavailable => TokenError::KeysUnavailable,
        })?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(&[&issuer.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let data = decode::<Map<String, Value>>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => invalid("not valid yet (nbf)"),
                ErrorKind::InvalidSignature => invalid("bad signature"),
                ErrorKind::InvalidIssuer => invalid("wrong issuer"),
                ErrorKind::InvalidAudience => invalid("wrong audience"),
                ErrorKind::InvalidAlgorithm => invalid("algorithm does not match the key"),
                ErrorKind::MissingRequiredClaim(c) => {
                    TokenError::Invalid(format!("missing claim `{c}`"))
                }
                _ => invalid("not a valid JWT"),
            }
        })?;
        let claims = data.claims;
        let number = |name: &str| claims.get(name).and_then(Value::as_u64);
        let exp = number("exp").ok_or_else(|| invalid("`exp` must be a number"))?;
        let iat = number("iat").ok_or_else(|| invalid("missing claim `iat`"))?;
        if iat > unix_now_secs().saturating_add(LEEWAY_SECS) {
            return Err(invalid("issued in the future (iat)"));
        }
        if exp.saturating_sub(iat) > self.max_lifetime.as_secs() {
            return Err(TokenError::Invalid(format!(
                "lifetime (exp - iat) above the maximum of {}s",
                self.max_lifetime.as_secs()
            )));
        }
        self.mapping
            .user(&claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }
}

/// The `alg` a token's header names, whatever it is.
fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let head = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// What every issuer's cache and fetcher share.
pub struct Settings {
    /// Needed by issuers whose keys are fetched over HTTP.
    pub client: Option<reqwest::Client>,
    pub policy: CachePolicy,
    pub allow_http_loopback: bool,
    pub max_keys: usize,
    pub clock: Arc<dyn Clock>,
}
