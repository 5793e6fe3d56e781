//! The service as an operator meets it: the real `qrlogin-auth` binary's
//! development subcommands and the pinned grpcurl 1.8.6 (reflection v1alpha)
//! driving a full login.

use qrlogin_auth::testing::{grpcurl_bin, NatsServer, TestAuth};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Grpcurl {
    addr: String,
}

impl Grpcurl {
    fn call(&self, args: &[&str]) -> Output {
        run(Command::new(grpcurl_bin())
            .arg("-plaintext")
            .arg(&self.addr)
            .args(args))
    }

    fn invoke(&self, method: &str, data: &str, headers: &[String]) -> Output {
        let mut cmd = Command::new(grpcurl_bin());
        cmd.arg("-plaintext");
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.args(["-d", data, &self.addr, method]);
        run(&mut cmd)
    }

    fn ok_json(&self, method: &str, data: &str, headers: &[String]) -> serde_json::Value {
        let out = self.invoke(method, data, headers);
        assert!(out.status.success(), "{method} failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("grpcurl prints JSON")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_runs_a_full_login() {
    let bin = env!("CARGO_BIN_EXE_qrlogin-auth");
    let keys = tempfile::tempdir().unwrap();
    let keygen = run(Command::new(bin)
        .args(["dev-keygen", "--out"])
        .arg(keys.path()));
    assert!(keygen.status.success(), "{}", text(&keygen));
    // A second keygen refuses to overwrite.
    let again = run(Command::new(bin)
        .args(["dev-keygen", "--out"])
        .arg(keys.path()));
    assert!(!again.status.success());
    assert!(text(&again).contains("--force"));

    let nats = NatsServer::start().await;
    let mut config = TestAuth::config(&nats, &qrlogin_auth::testing::TestKeys::generate());
    config.user_token_public_key_file = Some(keys.path().join("user-token.pub.pem"));
    config.access_token_private_key_file = keys.path().join("access-token.pem");
    config.record_key_file = keys.path().join("record.key");
    config.service_tokens_file = keys.path().join("service-tokens");
    let auth = TestAuth::spawn_config(config).await;
    let g = Grpcurl {
        addr: auth.addr().to_string(),
    };

    let list = g.call(&["list"]);
    let listed = text(&list);
    assert!(list.status.success(), "{listed}");
    assert!(listed.contains("qrlogin.auth.v1.AuthService"), "{listed}");
    assert!(listed.contains("grpc.health.v1.Health"), "{listed}");

    let describe = g.call(&["describe", "qrlogin.auth.v1.AuthService"]);
    let described = text(&describe);
    assert!(describe.status.success(), "{described}");
    for rpc in [
        "CreateLoginSession",
        "GetLoginSession",
        "ScanLoginSession",
        "ConfirmLoginSession",
        "DenyLoginSession",
        "CancelLoginSession",
        "RedeemLoginSession",
    ] {
        assert!(described.contains(rpc), "describe lists {rpc}");
    }
    assert!(
        described.contains("FAILED_PRECONDITION"),
        "comments are served"
    );
    let event = text(&g.call(&["describe", "qrlogin.events.v1.LoginEvent"]));
    assert!(event.contains("version"), "{event}");

    let health = g.ok_json("grpc.health.v1.Health/Check", "{}", &[]);
    assert_eq!(health["status"], "SERVING");

    let token = run(Command::new(bin)
        .args(["dev-token", "--sub", "alice", "--name", "Alice", "--key"])
        .arg(keys.path().join("user-token.pem")));
    assert!(token.status.success(), "{}", text(&token));
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let bearer = vec![format!("authorization: Bearer {token}")];
    // Browser-side calls carry the service token an edge would present.
    let service_token = std::fs::read_to_string(keys.path().join("service-token")).unwrap();
    let edge = vec![format!("x-qrlogin-service-token: {}", service_token.trim())];

    // Without it, a browser-side call is refused.
    let refused = g.invoke(
        "qrlogin.auth.v1.AuthService/CreateLoginSession",
        r#"{"client_ip":"198.51.100.4","user_agent":"grpcurl"}"#,
        &[],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Unauthenticated"),
        "{}",
        text(&refused)
    );

    let created = g.ok_json(
        "qrlogin.auth.v1.AuthService/CreateLoginSession",
        r#"{"client_ip":"198.51.100.4","user_agent":"grpcurl"}"#,
        &edge,
    );
    let id = created["session"]["sessionId"].as_str().unwrap().to_owned();
    let secret = created["browserSecret"].as_str().unwrap().to_owned();
    assert_eq!(created["session"]["state"], "LOGIN_STATE_PENDING");
    let by_id = format!(r#"{{"session_id":"{id}"}}"#);
    let by_secret = format!(r#"{{"session_id":"{id}","browser_secret":"{secret}"}}"#);
    let qr = created["qrPayload"].as_str().unwrap();
    let scan = format!(r#"{{"session_id":"{id}","qr_payload":"{qr}"}}"#);

    let scanned = g.ok_json(
        "qrlogin.auth.v1.AuthService/ScanLoginSession",
        &scan,
        &bearer,
    );
    assert_eq!(scanned["session"]["state"], "LOGIN_STATE_SCANNED");
    assert_eq!(scanned["browser"]["ip"], "198.51.100.4");
    assert_eq!(scanned["matchChoices"].as_array().unwrap().len(), 3);
    // The browser side reads the code it shows; the phone never gets it.
    assert!(scanned["session"].get("matchCode").is_none());
    let shown = g.ok_json(
        "qrlogin.auth.v1.AuthService/GetLoginSession",
        &by_secret,
        &edge,
    );
    let code = shown["session"]["matchCode"].as_u64().unwrap();
    let confirmed = g.ok_json(
        "qrlogin.auth.v1.AuthService/ConfirmLoginSession",
        &format!(r#"{{"session_id":"{id}","match_code":{code}}}"#),
        &bearer,
    );
    assert_eq!(confirmed["session"]["state"], "LOGIN_STATE_CONFIRMED");
    let redeemed = g.ok_json(
        "qrlogin.auth.v1.AuthService/RedeemLoginSession",
        &by_secret,
        &edge,
    );
    assert_eq!(redeemed["userId"], "alice");
    assert!(redeemed["accessToken"].as_str().unwrap().len() > 40);

    // A repeat (the first answer lost) gets the same token, not another.
    let second = g.ok_json(
        "qrlogin.auth.v1.AuthService/RedeemLoginSession",
        &by_secret,
        &edge,
    );
    assert_eq!(second["accessToken"], redeemed["accessToken"]);

    let unauth = g.invoke("qrlogin.auth.v1.AuthService/ScanLoginSession", &by_id, &[]);
    assert!(text(&unauth).contains("Unauthenticated"));
}
