//! What relying parties read from any edge: the signing keys of the tokens
//! auth issues, at `/.well-known/jwks.json`, the same set on every edge.

use crate::helpers::Cluster;

#[tokio::test]
async fn every_edge_publishes_auths_signing_keys() {
    let cluster = Cluster::start().await;
    let mut sets = Vec::new();
    for edge in [&cluster.edge1, &cluster.edge2] {
        let response = cluster
            .http
            .get(edge.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("GET jwks");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/jwk-set+json"
        );
        assert!(response.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age"));
        let set: serde_json::Value = response.json().await.expect("JSON");
        sets.push(set);
    }
    assert_eq!(sets[0], sets[1], "the same keys on every edge");
    let keys = sets[0]["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["crv"].as_str(),
            key["alg"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
    );
    assert!(key.get("d").is_none(), "no private member");
    let published =
        qrlogin_auth::signing::PublicKey::from_pem_file(&cluster.keys.access_public_key_path())
            .expect("the access token key");
    assert_eq!(key["kid"].as_str(), Some(published.kid.as_str()));
    assert_eq!(key["x"].as_str(), Some(published.x.as_str()));
}
