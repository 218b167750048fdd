//! `hookbridge receive` with the hook's secret answers as a receiver that checks
//! signatures would: `200` to a delivery signed with it, `401` to one that is not (it
//! answered 200 to both, so the platform recorded a delivery the receiver's own check would
//! have refused, and a rotation that broke that check went unseen). It prints the
//! Standard Webhooks headers the README says the walkthrough shows.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hookbridge_core::secret::SigningSecret;
use hookbridge_core::signing::{HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, standard_signature_header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_refuses_a_delivery_whose_signature_does_not_check() {
    let secret = SigningSecret::generate();
    let addr = hookbridge_testkit::Receiver::free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookbridge"))
        .args(["receive", "--listen", &addr.to_string(), "--secret", secret.expose()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = BufReader::new(child.stdout.take().unwrap());
    let mut started = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut started).unwrap();
    assert!(started.contains("listening"), "{started}");

    let http = reqwest::Client::new();
    let body = r#"{"detail-type":"user.login","detail":{}}"#;
    let send = |signed_with: &SigningSecret, body: &str| {
        let now = chrono::Utc::now().timestamp();
        let signature = standard_signature_header([signed_with], "msg_1", now, body.as_bytes());
        http.post(format!("http://{addr}/hook"))
            .header(HEADER_ID, "msg_1")
            .header(HEADER_TIMESTAMP, now.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(body.to_owned())
            .timeout(Duration::from_secs(10))
            .send()
    };
    assert_eq!(send(&secret, body).await.unwrap().status(), 200);
    let mut line = String::new();
    printed.read_line(&mut line).unwrap();
    assert!(line.starts_with("POST /hook  webhook-id=msg_1  webhook-timestamp="), "{line}");
    assert!(line.contains("webhook-signature=v1,") && line.contains("signature valid"), "{line}");
    assert_eq!(send(&SigningSecret::generate(), body).await.unwrap().status(), 401, "another secret");
    let unstamped = http.post(format!("http://{addr}/hook")).body(body).send().await.unwrap();
    assert_eq!(unstamped.status(), 401, "no signature at all");
    // A delivery carrying the challenge's header is still a delivery: it was answered
    // 200 unchecked.
    let posing =
        http.post(format!("http://{addr}/hook")).header("x-uid-challenge", "v-0").body(body).send().await.unwrap();
    assert_eq!(posing.status(), 401, "a POST with the challenge header is checked");
    let get_delivery = http
        .get(format!("http://{addr}/hook"))
        .header("x-uid-challenge", "v-0")
        .header(HEADER_ID, "msg_2")
        .send()
        .await
        .unwrap();
    assert_eq!(get_delivery.status(), 401, "a GET delivery (it has a webhook-id) is checked");
    let challenge = http.get(format!("http://{addr}/hook")).header("x-uid-challenge", "v-1").send().await.unwrap();
    assert_eq!(challenge.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"verification": "v-1"}));
    let _ = child.kill();
    let _ = child.wait();
}

/// An address already taken is named in the error, with the flag that sets it.
#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_hookbridge")).args(["receive", "--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr} (--listen)")), "{err}");
}
