//! What nats-server must be told about qrlogin's users: the
//! account `QRLOGIN` (JetStream on) with the least-privilege nkey users
//! `auth` and `edge`, and `SYS` as the system account. The test harness and
//! the local cluster (`qrlogin-auth dev-nats-config`) render their
//! `nats.conf` from here; the Kubernetes ConfigMap carries the same rules
//! (deploy/k8s/base/nats/configmap.yaml, checked by deploy/k8s/check.sh).
//!
//! - auth: publish only its buckets' JetStream API subjects and `$KV.<bucket>.>`,
//!   subscribe only its own inbox prefix. It never publishes events: the
//!   server republishes every write of the session bucket.
//! - edge: subscribe `<prefix>.*`; publish nothing; no JetStream, no `$KV`.
//!
//! No user is anonymous: a client without a listed nkey is refused.

use std::fmt::Write as _;

/// The inbox prefix auth's client uses (async-nats `custom_inbox_prefix`);
/// JetStream answers come back on it, and auth may subscribe nothing else.
pub const AUTH_INBOX_PREFIX: &str = "_INBOX_qrlogin_auth";

/// The account that holds qrlogin's users and streams.
pub const ACCOUNT: &str = "QRLOGIN";

/// Which subjects one user may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// One nkey user of the `QRLOGIN` account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// A comment in the rendered file (`auth`, `edge`, a test's name).
    pub name: String,
    /// The public nkey (`U...`).
    pub nkey: String,
    pub permissions: Permissions,
}

/// The JetStream API subjects a client needs to open (or create, or update)
/// the key-value bucket `bucket` and to read and write its keys.
pub fn bucket_api_subjects(bucket: &str) -> Vec<String> {
    let stream = format!("KV_{bucket}");
    vec![
        format!("$KV.{bucket}.>"),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
    ]
}

/// auth's rights: JetStream account info (needed to create a bucket) and
/// the API of each of its buckets; answers on its own inbox only. No event
/// subject: the server republishes the bucket's writes.
pub fn auth_permissions(buckets: &[&str]) -> Permissions {
    let mut publish = vec!["$JS.API.INFO".to_owned()];
    for bucket in buckets {
        publish.extend(bucket_api_subjects(bucket));
    }
    Permissions {
        publish,
        subscribe: vec![format!("{AUTH_INBOX_PREFIX}.>")],
    }
}

/// An edge's rights: the per-session event subjects, nothing else.
pub fn edge_permissions(subject_prefix: &str) -> Permissions {
    Permissions {
        publish: Vec::new(),
        subscribe: vec![format!("{subject_prefix}.*")],
    }
}

fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The `accounts { ... }` and `system_account` blocks of nats.conf. Subjects
/// are quoted so that `$KV` and `$JS` are not read as variables. A user with
/// no publish subject gets `deny: [">"]`, the explicit "publish nothing".
pub fn render_accounts(users: &[User]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "accounts {{");
    let _ = writeln!(out, "  {ACCOUNT} {{");
    let _ = writeln!(out, "    jetstream: enabled");
    let _ = writeln!(out, "    users: [");
    for user in users {
        let publish = if user.permissions.publish.is_empty() {
            format!("deny: {}", quoted_list(&[">".to_owned()]))
        } else {
            format!("allow: {}", quoted_list(&user.permissions.publish))
        };
        let subscribe = if user.permissions.subscribe.is_empty() {
            format!("deny: {}", quoted_list(&[">".to_owned()]))
        } else {
            format!("allow: {}", quoted_list(&user.permissions.subscribe))
        };
        let _ = writeln!(out, "      # {}", user.name.replace('\n', " "));
        let _ = writeln!(
            out,
            "      {{ nkey: {:?}, permissions: {{ publish: {{ {publish} }}, subscribe: {{ {subscribe} }} }} }}",
            user.nkey
        );
    }
    let _ = writeln!(out, "    ]");
    let _ = writeln!(out, "  }}");
    let _ = writeln!(out, "  SYS {{ }}");
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "system_account: SYS");
    out
}

/// Where and how one nats-server listens, for [`render_server`].
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Monitoring port (`/healthz`, `/varz`), if any.
    pub http_port: Option<u16>,
    pub server_name: Option<String>,
    pub store_dir: String,
    /// Server certificate, key and (for client certificates) CA, all PEM.
    pub tls: Option<ServerTls>,
    /// Membership of a JetStream cluster (routes to the other members).
    pub cluster: Option<ClusterSettings>,
    /// How long lame duck mode spreads client disconnects over (nats-server
    /// refuses less than 30 s), and the grace period before it starts;
    /// nats-server's defaults (2 min, 10 s) when unset.
    pub lame_duck: Option<LameDuck>,
}

/// One member's part of a cluster: its route listener and every member's
/// route URL (a server ignores the route to itself, so every member gets
/// the same list).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `nats-route://host:port` of every member.
    pub routes: Vec<String>,
    /// Routes over mutual TLS: both ends present a certificate of `ca_file`
    /// (`verify_clients` is forced on for routes).
    pub tls: Option<ServerTls>,
}

#[derive(Debug, Clone, Copy)]
pub struct LameDuck {
    pub duration: std::time::Duration,
    pub grace_period: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_file: String,
    pub key_file: String,
    pub ca_file: Option<String>,
    /// Require a client certificate signed by `ca_file`.
    pub verify_clients: bool,
}

/// A `tls { }` block at `indent`.
fn render_tls(out: &mut String, indent: &str, tls: &ServerTls, verify: bool) {
    let _ = writeln!(out, "{indent}tls {{");
    let _ = writeln!(out, "{indent}  cert_file: {:?}", tls.cert_file);
    let _ = writeln!(out, "{indent}  key_file: {:?}", tls.key_file);
    if let Some(ca) = &tls.ca_file {
        let _ = writeln!(out, "{indent}  ca_file: {ca:?}");
    }
    if verify {
        let _ = writeln!(out, "{indent}  verify: true");
    }
    let _ = writeln!(out, "{indent}  timeout: 2");
    let _ = writeln!(out, "{indent}}}");
}

/// nats-server's duration syntax: whole milliseconds.
fn nats_duration(d: std::time::Duration) -> String {
    format!("\"{}ms\"", d.as_millis())
}

/// A whole nats.conf for one server: listen, JetStream store, optional TLS,
/// optional cluster membership, then the accounts.
pub fn render_server(server: &ServerSettings, users: &[User]) -> String {
    let mut out =
        String::from("# Rendered by qrlogin (nats_accounts.rs); edit the source, not this file.\n");
    let _ = writeln!(out, "listen: \"{}:{}\"", server.host, server.port);
    if let Some(port) = server.http_port {
        let _ = writeln!(out, "http: \"{}:{port}\"", server.host);
    }
    if let Some(name) = &server.server_name {
        let _ = writeln!(out, "server_name: {name:?}");
    }
    let _ = writeln!(out, "jetstream {{ store_dir: {:?} }}", server.store_dir);
    if let Some(ld) = &server.lame_duck {
        let _ = writeln!(out, "lame_duck_duration: {}", nats_duration(ld.duration));
        let _ = writeln!(
            out,
            "lame_duck_grace_period: {}",
            nats_duration(ld.grace_period)
        );
    }
    if let Some(tls) = &server.tls {
        render_tls(&mut out, "", tls, tls.verify_clients);
    }
    if let Some(cluster) = &server.cluster {
        let _ = writeln!(out, "cluster {{");
        let _ = writeln!(out, "  name: {:?}", cluster.name);
        let _ = writeln!(out, "  listen: \"{}:{}\"", cluster.host, cluster.port);
        if let Some(tls) = &cluster.tls {
            render_tls(&mut out, "  ", tls, true);
        }
        let _ = writeln!(out, "  routes: [");
        for route in &cluster.routes {
            let _ = writeln!(out, "    {route:?}");
        }
        let _ = writeln!(out, "  ]");
        let _ = writeln!(out, "}}");
    }
    out.push_str(&render_accounts(users));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_gets_its_buckets_api_and_no_wildcard_over_the_js_api() {
        let p = auth_permissions(&["qrlogin_sessions"]);
        assert!(p.publish.contains(&"$KV.qrlogin_sessions.>".to_owned()));
        assert!(p
            .publish
            .contains(&"$JS.API.STREAM.INFO.KV_qrlogin_sessions".to_owned()));
        assert!(!p.publish.iter().any(|s| s == "$JS.API.>" || s == ">"));
        assert!(!p.publish.iter().any(|s| s.starts_with("qrlogin.")));
        assert_eq!(p.subscribe, vec!["_INBOX_qrlogin_auth.>"]);
    }

    #[test]
    fn a_cluster_member_lists_every_route_and_verifies_route_certificates() {
        let tls = ServerTls {
            cert_file: "/c.pem".into(),
            key_file: "/k.pem".into(),
            ca_file: Some("/ca.pem".into()),
            verify_clients: false,
        };
        let text = render_server(
            &ServerSettings {
                host: "127.0.0.1".into(),
                port: 4222,
                server_name: Some("nats-1".into()),
                store_dir: "/s".into(),
                cluster: Some(ClusterSettings {
                    name: "qrlogin".into(),
                    host: "127.0.0.1".into(),
                    port: 6222,
                    routes: vec![
                        "nats-route://127.0.0.1:6222".into(),
                        "nats-route://127.0.0.1:6223".into(),
                    ],
                    tls: Some(tls),
                }),
                lame_duck: Some(LameDuck {
                    duration: std::time::Duration::from_secs(30),
                    grace_period: std::time::Duration::from_millis(500),
                }),
                ..ServerSettings::default()
            },
            &[],
        );
        assert!(text.contains("server_name: \"nats-1\""), "{text}");
        assert!(text.contains("lame_duck_duration: \"30000ms\""), "{text}");
        assert!(text.contains("lame_duck_grace_period: \"500ms\""), "{text}");
        let cluster = text.split("cluster {").nth(1).expect("cluster block");
        assert!(cluster.contains("name: \"qrlogin\""), "{text}");
        assert!(cluster.contains("listen: \"127.0.0.1:6222\""), "{text}");
        assert!(cluster.contains("verify: true"), "{text}");
        assert!(
            cluster.contains("\"nats-route://127.0.0.1:6223\""),
            "{text}"
        );
        // The client listener stays without client certificates.
        assert_eq!(text.matches("verify: true").count(), 1, "{text}");
    }

    #[test]
    fn rendered_users_quote_subjects_and_deny_what_they_do_not_list() {
        let text = render_accounts(&[User {
            name: "edge".into(),
            nkey: "UABC".into(),
            permissions: edge_permissions("qrlogin.session"),
        }]);
        assert!(text.contains(r#"publish: { deny: [">"] }"#), "{text}");
        assert!(text.contains(r#"subscribe: { allow: ["qrlogin.session.*"] }"#));
        assert!(text.contains("system_account: SYS"));
        let auth = render_accounts(&[User {
            name: "auth".into(),
            nkey: "UDEF".into(),
            permissions: auth_permissions(&["b"]),
        }]);
        assert!(auth.contains(r#""$KV.b.>""#), "{auth}");
    }
}
