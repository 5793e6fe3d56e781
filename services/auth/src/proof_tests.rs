//! Proofs that must pass and every way one must fail.

use super::signer::KeyPair;
use super::*;

const SID: &str = "q3Zb0Xz2kT9yLw1sJm5HAA";
const NOW_S: i64 = 1_800_000_000;

fn expected(thumbprint: &str) -> Expected<'_> {
    Expected {
        session_id: SID,
        thumbprint,
        now: NOW_S * 1000,
        max_age: Duration::from_secs(60),
    }
}

fn claims() -> serde_json::Value {
    serde_json::json!({"htm": "POST", "htu": "https://login.example/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/redeem?x=1",
        "iat": NOW_S, "jti": "0123456789abcdef", "sid": SID})
}

#[test]
fn rfc7638_thumbprint_of_the_rfc_example_shape() {
    // RFC 7638 section 3.1 defines the member order; this key is from
    // RFC 7517 appendix A.1 (an EC P-256 key).
    let key = BrowserKey {
        kty: "EC".into(),
        crv: "P-256".into(),
        x: "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4".into(),
        y: "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM".into(),
    };
    let t = key.thumbprint().unwrap();
    let canonical = r#"{"crv":"P-256","kty":"EC","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}"#;
    assert_eq!(t, URL_SAFE_NO_PAD.encode(Sha256::digest(canonical)));
    assert_eq!(t.len(), 43);
}

#[test]
fn keys_that_are_not_p256_points_are_refused() {
    let good = KeyPair::generate().public();
    for bad in [
        BrowserKey {
            kty: "RSA".into(),
            ..good.clone()
        },
        BrowserKey {
            crv: "P-384".into(),
            ..good.clone()
        },
        BrowserKey {
            x: "AAAA".into(),
            ..good.clone()
        },
        BrowserKey {
            y: good.x.clone(),
            ..good.clone()
        },
    ] {
        assert_eq!(bad.thumbprint(), Err(ProofError::InvalidKey), "{bad:?}");
    }
}

#[test]
fn a_fresh_proof_by_the_bound_key_verifies() {
    let k = KeyPair::generate();
    let t = k.public().thumbprint().unwrap();
    assert_eq!(verify(&k.proof(SID, NOW_S), &expected(&t)), Ok(()));
    assert_eq!(
        verify(&k.sign(&k.header(), &claims()), &expected(&t)),
        Ok(())
    );
    assert_eq!(verify(&k.proof(SID, NOW_S - 59), &expected(&t)), Ok(()));
}

#[test]
fn every_wrong_part_fails() {
    let k = KeyPair::generate();
    let other = KeyPair::generate();
    let t = k.public().thumbprint().unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        k.sign(&k.header(), &c)
    };
    let header_with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut h = k.header();
        f(&mut h);
        k.sign(&h, &claims())
    };
    let mut tampered = k.proof(SID, NOW_S);
    tampered.push('A');
    let cases = [
        ("", ProofError::Missing),
        ("a.b", ProofError::Invalid("not a compact JWS")),
        (
            &*other.proof(SID, NOW_S),
            ProofError::Invalid("signed by another key than the session's"),
        ),
        (&*tampered, ProofError::Invalid("malformed signature")),
        (
            &*k.proof("AAAAAAAAAAAAAAAAAAAAAA", NOW_S),
            ProofError::Invalid("htu must be the redeem URL of this session"),
        ),
        (
            &*k.proof(SID, NOW_S - 61),
            ProofError::Invalid("iat is not within the allowed window"),
        ),
        (
            &*k.proof(SID, NOW_S + 61),
            ProofError::Invalid("iat is not within the allowed window"),
        ),
        (
            &*with(&|c| c["htm"] = "GET".into()),
            ProofError::Invalid("htm must be POST"),
        ),
        (
            &*with(&|c| c["sid"] = "AAAAAAAAAAAAAAAAAAAAAA".into()),
            ProofError::Invalid("sid must name this session"),
        ),
        (
            &*with(&|c| c["jti"] = "short".into()),
            ProofError::Invalid("jti must be 16 to 128 characters"),
        ),
        (
            &*with(&|c| c["htu"] = "/v1/login-sessions/q3Zb0Xz2kT9yLw1sJm5HAA/redeem".into()),
            ProofError::Invalid("htu must be the redeem URL of this session"),
        ),
        (
            &*header_with(&|h| h["typ"] = "JWT".into()),
            ProofError::Invalid("typ must be dpop+jwt"),
        ),
        (
            &*header_with(&|h| h["alg"] = "none".into()),
            ProofError::Invalid("alg must be ES256"),
        ),
        (
            &*header_with(&|h| h["jwk"] = serde_json::Value::Null),
            ProofError::Invalid("the header carries no jwk"),
        ),
    ];
    for (proof, want) in cases {
        assert_eq!(verify(proof, &expected(&t)), Err(want), "{proof}");
    }
    // A header claiming another key than the one that signed.
    let mut h = k.header();
    h["jwk"] = serde_json::to_value(serde_json::json!({"kty": "EC", "crv": "P-256",
        "x": other.public().x, "y": other.public().y}))
    .unwrap();
    let mixed = k.sign(&h, &claims());
    let t_other = other.public().thumbprint().unwrap();
    assert_eq!(
        verify(&mixed, &expected(&t_other)),
        Err(ProofError::Invalid("bad signature"))
    );
}

#[test]
fn a_jwk_carrying_its_private_key_is_refused() {
    let pair = KeyPair::generate();
    let thumbprint = pair.public().thumbprint().unwrap();
    let mut header = pair.header();
    header["jwk"]["d"] = serde_json::json!("870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE");
    let proof = pair.sign(&header, &claims());
    assert_eq!(
        verify(&proof, &expected(&thumbprint)),
        Err(ProofError::Invalid(
            "the header's jwk carries a private key (d)"
        ))
    );
}

#[test]
fn an_iat_at_either_end_of_the_integers_is_refused_without_overflow() {
    let pair = KeyPair::generate();
    let thumbprint = pair.public().thumbprint().unwrap();
    for iat in [
        i64::MIN,
        i64::MIN / 1000 - 1,
        -1,
        i64::MAX / 1000 + 1,
        i64::MAX,
    ] {
        let mut c = claims();
        c["iat"] = serde_json::json!(iat);
        let proof = pair.sign(&pair.header(), &c);
        assert_eq!(
            verify(&proof, &expected(&thumbprint)),
            Err(ProofError::Invalid("iat is not within the allowed window")),
            "iat {iat}"
        );
    }
}
