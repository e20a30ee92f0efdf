//! The emulator is as strict as a real Cryptshare Server, driven with raw HTTP; its runtime
//! control under `/_sim/`; and the `cryptshare-sim` binary.

#[path = "cryptshare_support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::*;

struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    fn new(base: String) -> Self {
        Raw {
            http: reqwest::Client::new(),
            base,
        }
    }

    async fn token(&self, email: &str, client_id: &str) -> String {
        let r = self
            .http
            .post(format!(
                "{}/api/users/{email}/verification/token",
                self.base
            ))
            .header("X-CS-MajorApiVersion", "1")
            .header("X-CS-MinimumMinorApiVersion", "8")
            .header("X-CS-ClientId", client_id)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["data"]["token"].as_str().unwrap().to_owned()
    }

    fn v(&self, rb: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
        api_headers(rb).header("X-CS-VerificationToken", token)
    }

    async fn create(&self, token: &str) -> String {
        let r = self
            .v(
                self.http.post(format!(
                    "{}/api/users/{SENDER}/transfer-sessions",
                    self.base
                )),
                token,
            )
            .json(&json!({"recipients": {"to": [{"mail": "bob@example.com"}]}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let loc = r.headers()["location"].to_str().unwrap();
        loc.rsplit('/').next().unwrap().to_owned()
    }
}

async fn code(r: reqwest::Response) -> (u16, Option<i64>) {
    let st = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (st, v["errorCode"].as_i64())
}

#[tokio::test]
async fn required_headers_versions_and_client_id_format() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let raw = Raw::new(sim.url());
    let url = format!("{}/api/users/{SENDER}/verification", sim.url());
    let h = &raw.http;
    assert_eq!(
        code(h.get(&url).send().await.unwrap()).await,
        (400, Some(1002))
    );
    let only_major = h.get(&url).header("X-CS-MajorApiVersion", "1");
    assert_eq!(
        code(only_major.send().await.unwrap()).await,
        (400, Some(1002))
    );
    let no_id = h
        .get(&url)
        .header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "8");
    assert_eq!(code(no_id.send().await.unwrap()).await, (400, Some(1002)));
    for bad in ["short", &format!("{}-", "a".repeat(60)), &"a".repeat(4001)] {
        let r = h
            .get(&url)
            .header("X-CS-MajorApiVersion", "1")
            .header("X-CS-MinimumMinorApiVersion", "8")
            .header("X-CS-ClientId", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (400, Some(1004)), "{}", bad.len());
    }
    let with = |major: &str, minor: &str, product: &str| {
        h.get(&url)
            .header("X-CS-MajorApiVersion", major)
            .header("X-CS-MinimumMinorApiVersion", minor)
            .header("X-CS-ProductKey", product)
            .header("X-CS-ClientId", CLIENT_ID)
            .send()
    };
    assert_eq!(
        code(with("2", "8", "api.rest").await.unwrap()).await,
        (404, Some(2004))
    );
    assert_eq!(
        code(with("1", "9", "api.rest").await.unwrap()).await,
        (404, Some(2004))
    );
    assert_eq!(
        code(with("x", "8", "api.rest").await.unwrap()).await,
        (400, Some(1004))
    );
    assert_eq!(
        code(with("1", "8", "api.other").await.unwrap()).await,
        (400, Some(1004))
    );
    assert_eq!(with("1", "7", "api.rest").await.unwrap().status(), 200);
    // The query-parameter alternatives work as well.
    let q = format!("{url}?major-api-version=1&minimum-minor-api-version=8&client-id={CLIENT_ID}");
    assert_eq!(h.get(&q).send().await.unwrap().status(), 200);
    // /api/status needs nothing.
    let st: Value = h
        .get(format!("{}/api/status", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        st,
        json!({"apiVersions": {"uiApiVersions": [{"major": 1, "minor": 8}]}})
    );
    let r = api_headers(h.get(format!("{}/api/nope", sim.url())));
    assert_eq!(code(r.send().await.unwrap()).await, (404, Some(1006)));
    let r = api_headers(h.get(format!(
        "{}/api/users/not-an-address/verification",
        sim.url()
    )));
    assert_eq!(code(r.send().await.unwrap()).await, (400, Some(1005)));
}

#[tokio::test]
async fn tokens_are_bound_to_address_and_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let raw = Raw::new(sim.url());
    let token = raw.token(SENDER, CLIENT_ID).await;
    // Percent-encoded `@` and case differences address the same sender.
    let tid = raw.create(&token).await;
    let get = |email: &str, cid: &str| {
        raw.http
            .get(format!(
                "{}/api/users/{email}/transfer-sessions/{tid}",
                sim.url()
            ))
            .header("X-CS-MajorApiVersion", "1")
            .header("X-CS-MinimumMinorApiVersion", "8")
            .header("X-CS-ClientId", cid)
            .header("X-CS-VerificationToken", &token)
    };
    assert_eq!(
        get("alice%40example.org", CLIENT_ID)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get("Alice@Example.org", CLIENT_ID)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        code(get("bob@example.org", CLIENT_ID).send().await.unwrap()).await,
        (401, Some(3002))
    );
    let other_id = "Z".repeat(50);
    assert_eq!(
        code(get(SENDER, &other_id).send().await.unwrap()).await,
        (401, Some(3002))
    );
    // A token of another client id does not open this client's session.
    let other_token = raw.token(SENDER, &other_id).await;
    let r = raw
        .http
        .get(format!(
            "{}/api/users/{SENDER}/transfer-sessions/{tid}",
            sim.url()
        ))
        .header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "8")
        .header("X-CS-ClientId", &other_id)
        .header("X-CS-VerificationToken", &other_token);
    assert_eq!(code(r.send().await.unwrap()).await, (401, Some(3002)));
    let r = api_headers(raw.http.get(format!(
        "{}/api/users/{SENDER}/transfer-sessions/{tid}",
        sim.url()
    )));
    assert_eq!(code(r.send().await.unwrap()).await, (400, Some(1002)));
}

/// A refused token answers 3002 with the status the OpenAPI file declares for the operation:
/// 401 where it declares 401, else 403 (no 401 is declared for the policy, session creation,
/// PATCH, finalize and the file calls).
#[tokio::test]
async fn a_refused_token_answers_401_or_403_as_the_operation_declares() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    // The token is refused before any body is read: the calls carry none.
    sim.handmade_requests();
    let raw = Raw::new(sim.url());
    let token = raw.token(SENDER, CLIENT_ID).await;
    let tid = raw.create(&token).await;
    let h = &raw.http;
    let user = format!("{}/api/users/{SENDER}", sim.url());
    let session = format!("{user}/transfer-sessions/{tid}");
    let file = format!("{session}/files/F");
    let bad = "not-a-token";
    let calls = [
        (h.post(format!("{user}/transfer-policy")), 403),
        (h.post(format!("{user}/transfer-sessions")), 403),
        (h.get(&session), 401),
        (h.patch(&session), 403),
        (h.post(&session), 403),
        (h.delete(&session), 401),
        (h.post(format!("{session}/files")), 403),
        (h.put(format!("{file}/content")), 403),
        (h.delete(&file), 403),
        (h.get(format!("{user}/transfers")), 401),
        (h.get(format!("{user}/transfers/{tid}")), 401),
    ];
    let mut got = Vec::new();
    let mut want = Vec::new();
    for (rb, status) in calls {
        let r = raw.v(rb, bad).send().await.unwrap();
        let url = r.url().path().to_owned();
        let st = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        got.push((url.clone(), st, body));
        let message = if status == 401 {
            "The provided verification token differs from the verification token used for patching the transfer."
        } else {
            "Invalid verification data."
        };
        want.push((
            url,
            status,
            json!({"errorCode": 3002, "errorMessage": message}),
        ));
    }
    assert_eq!(got, want);
    // The session is untouched and the right token still works.
    let r = raw.v(h.get(&session), &token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn email_code_verification_writes_a_mail_and_accepts_the_code_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let h = reqwest::Client::new();
    let base = format!("{}/api/users/{SENDER}/verification", sim.url());
    let r = api_headers(h.post(format!("{base}/code/email")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, mail) = mails(&sim).pop().unwrap();
    assert!(mail.contains(&format!("To: <{SENDER}>\r\n")));
    let code_value = mail
        .lines()
        .find_map(|l| l.strip_prefix("Your verification code is: "))
        .unwrap()
        .to_owned();
    assert_eq!(code_value.len(), 10);
    let ask = || {
        api_headers(h.post(format!("{base}/token")))
            .json(&json!({"verificationCode": code_value}))
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);
    assert_eq!(code(ask().await.unwrap()).await, (403, Some(3002)));
}

#[tokio::test]
async fn session_rules_read_only_fields_uploads_and_finalize() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    // Unknown properties and an unsupported mode are sent on purpose (leniency checks).
    sim.handmade_requests();
    let raw = Raw::new(sim.url());
    let token = raw.token(SENDER, CLIENT_ID).await;
    let tid = raw.create(&token).await;
    assert!(
        cryptshare_gateway::cryptshare::is_tracking_id(&tid),
        "{tid}"
    );
    let base = format!("{}/api/users/{SENDER}/transfer-sessions/{tid}", sim.url());
    let h = &raw.http;

    for body in [
        json!({"files": []}),
        json!({"recipients": {"to": [{"mail": "x@example.com"}]}}),
        json!({"expirationDate": "next week"}),
        json!({"securityMode": {"name": "ONE_TIME_PASSWORD", "config": {"passwordMode": "SOMETIMES"}}}),
        json!({"fileChecksumAlgorithm": "MD5"}),
        json!([1, 2]),
    ] {
        let r = raw
            .v(h.patch(&base), &token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(code(r).await, (400, Some(1004)), "{body}");
    }
    let r = raw
        .v(h.patch(&base), &token)
        .json(&json!({"securityMode": {"name": "QUICK", "config": {}}}))
        .send()
        .await
        .unwrap();
    // The PATCH schema names ONE_TIME_PASSWORD only: QUICK is an invalid value (PATCH
    // declares no 501).
    assert_eq!(code(r).await, (400, Some(1004)));
    let r = raw
        .v(h.patch(&base), &token)
        .json(&json!({"securityMode": {"name": "ONE_TIME_PASSWORD", "config": {"passwordMode": "MANUAL", "password": "short"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (409, Some(2001)));
    // Unknown properties are tolerated (a known client sends `sender.email`); merge semantics.
    let r = raw
        .v(h.patch(&base), &token)
        .json(&json!({"sender": {"name": "A", "email": "x@y.z"}, "notificationMessage": {"subject": "S"}}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["sender"], json!({"name": "A"}));
    assert_eq!(
        v["data"]["notificationMessage"],
        json!({"subject": "S", "body": ""})
    );
    assert_eq!(v["data"]["fileChecksumAlgorithm"], "SHA256");

    let reg = |name: &str, size: u64| {
        raw.v(h.post(format!("{base}/files")), &token)
            .json(&json!({"fileName": name, "size": size}))
            .send()
    };
    let fid = {
        let v: Value = reg("a.txt", 3).await.unwrap().json().await.unwrap();
        v["data"]["fileId"].as_str().unwrap().to_owned()
    };
    assert_eq!(fid.len(), 10);
    let content = format!("{base}/files/{fid}/content");
    // Wrong content type; a chunked body without Content-Length.
    let r = raw
        .v(h.put(&content), &token)
        .header("Content-Type", "text/plain")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, Some(1004)));
    let chunked =
        reqwest::Body::wrap_stream(futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
            bytes::Bytes::from_static(b"abc"),
        )]));
    let r = raw
        .v(h.put(&content), &token)
        .header("Content-Type", "application/octet-stream")
        .body(chunked)
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (400, Some(1002)));
    assert_eq!(sim.stats().uploads_without_length, 1);
    // Finalize with an un-uploaded file is refused; after the upload it works.
    let r = raw.v(h.post(&base), &token).send().await.unwrap();
    assert_eq!(code(r).await, (409, Some(2001)));
    let r = raw
        .v(h.put(&content), &token)
        .header("Content-Type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = raw
        .v(h.put(format!("{base}/files/nope/content")), &token)
        .header("Content-Type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (404, Some(2003)));
    let r = raw.v(h.post(&base), &token).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // Sessions are gone after finalize, for every session endpoint.
    assert_eq!(
        code(raw.v(h.get(&base), &token).send().await.unwrap()).await,
        (404, Some(2003))
    );
    assert_eq!(
        code(raw.v(h.post(&base), &token).send().await.unwrap()).await,
        (404, Some(2003))
    );
    assert_eq!(
        code(reg("b.txt", 1).await.unwrap()).await,
        (404, Some(2003))
    );
    // No checksum registered: the upload counts as it is; the transfer becomes ACTIVE.
    let t = &sim.transfers()[0];
    assert_eq!(
        t.state,
        cryptshare_gateway::cryptshare::TransferState::Active
    );
    assert_eq!(std::fs::read(&t.files[0].path).unwrap(), b"abc");
}

#[tokio::test]
async fn faults_and_policy_are_controlled_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let h = reqwest::Client::new();
    let ctl = format!("{}/_sim", sim.url());
    let r = h
        .post(format!("{ctl}/faults"))
        .json(&json!({"endpoint": "clients", "status": 503, "count": 1, "latency_ms": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(sim.faults()[0].status, Some(503));
    let list: Value = h
        .get(format!("{ctl}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["endpoint"], "clients");
    assert_eq!(list[0]["latency_ms"], 1);
    let clients = || api_headers(h.get(format!("{}/api/clients", sim.url()))).send();
    assert_eq!(code(clients().await.unwrap()).await, (503, Some(5000)));
    assert_eq!(clients().await.unwrap().status(), 200);
    let r = h
        .post(format!("{ctl}/faults"))
        .json(&json!({"endpoint": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        h.delete(format!("{ctl}/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(sim.faults().is_empty());

    let r = h
        .put(format!("{ctl}/policy"))
        .json(&json!({"max_total_size": 10, "allowed_password_modes": ["NONE"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let p = sim.policy();
    assert_eq!(p.max_total_size, 10);
    assert_eq!(p.max_retention_period, 30);
    let state: Value = h
        .get(format!("{ctl}/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["open_sessions"], 0);
    assert_eq!(state["stats"]["faults_fired"], 1);
    assert_eq!(
        h.post(format!("{ctl}/expire-tokens"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
}

/// A `cryptshare-sim` child: killed on drop unless the test ended it (a failed assertion must
/// not leave the process behind).
struct Child(std::process::Child);

impl std::ops::Deref for Child {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Child {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn the_binary_serves_and_takes_faults_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryptshare-sim"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--client-id", CLIENT_ID])
        .args([
            "--fault",
            r#"{"endpoint":"password","status":500,"count":1}"#,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(Child)
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let h = reqwest::Client::new();
    let pw = || api_headers(h.get(format!("{url}/api/password"))).send();
    assert_eq!(code(pw().await.unwrap()).await, (500, Some(5000)));
    assert_eq!(pw().await.unwrap().status(), 200);
    // Only the configured client id is trusted.
    let r = h
        .post(format!("{url}/api/users/{SENDER}/verification/token"))
        .header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "8")
        .header("X-CS-ClientId", "Q".repeat(50))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(code(r).await, (403, Some(3002)));
    assert!(dir.path().join("mails").is_dir() && dir.path().join("files").is_dir());
    // What it answered (and was sent) is what openapi-1.8.json declares.
    let exchanges = support::openapi::fetch_exchanges(&url).await;
    assert_eq!(exchanges.len(), 3);
    support::openapi::assert_exchanges_valid(&exchanges);
    // SIGTERM ends it cleanly.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let bad = Command::new(env!("CARGO_BIN_EXE_cryptshare-sim"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--client-id", "short"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("client id"));
}

#[tokio::test]
async fn the_binary_takes_the_strictness_switches_as_flags_and_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cryptshare-sim"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args([
            "--bind-session-tokens",
            "--token-rate-limit",
            "3",
            "--processing-ms",
            "20000",
            "--nulls-and-extra-fields",
            "--proxy-page",
            "502",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map(Child)
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let h = reqwest::Client::new();
    let sw: serde_json::Value = h
        .get(format!("{url}/_sim/switches"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sw,
        serde_json::json!({"nulls_and_extra_fields": true, "processing_ms": 20000,
            "bind_session_tokens": true, "token_rate_limit": 3, "whole_day_expiry": false})
    );
    // --proxy-page: every API call gets the HTML page.
    let r = api_headers(h.get(format!("{url}/api/password")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().starts_with("<html>"));
    // At run time: back to the permissive default.
    let r = h
        .put(format!("{url}/_sim/switches"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = h.delete(format!("{url}/_sim/faults")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let sw: serde_json::Value = h
        .get(format!("{url}/_sim/switches"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sw["bind_session_tokens"], false);
    assert_eq!(sw["processing_ms"], serde_json::Value::Null);
    assert_eq!(
        api_headers(h.get(format!("{url}/api/password")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = h
        .put(format!("{url}/_sim/switches"))
        .body(r#"{"unknown_switch":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let exchanges = support::openapi::fetch_exchanges(&url).await;
    assert_eq!(exchanges.len(), 2);
    support::openapi::assert_exchanges_valid(&exchanges);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let bad = Command::new(env!("CARGO_BIN_EXE_cryptshare-sim"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--proxy-page", "200"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--proxy-page: 200: must be 400 to 599"));
}

/// The confidential message (openapi-1.8 `confidentialMessageFileId`, `downloadEmlUsingGET_6`):
/// a PATCH marking a file is refused (409/2001) while the policy allows no confidential
/// message, an unknown file id is 404, a second PATCH moves the mark; the recipient fetches the
/// message with `GET /api/transfers/{id}/eml` (password required, `threshold` an integer), and
/// the EML's first part is the marked file byte for byte, the other files embedded after it.
/// Every answer is checked against the OpenAPI file when the emulator goes.
#[tokio::test]
async fn a_confidential_message_is_marked_by_patch_and_fetched_as_eml() {
    use cryptshare_gateway::sim::SimPolicy;
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    sim.set_policy(SimPolicy {
        confidential_message_allowed: false,
        ..SimPolicy::default()
    });
    let raw = Raw::new(sim.url());
    let h = &raw.http;
    let token = raw.token(SENDER, CLIENT_ID).await;
    let tid = raw.create(&token).await;
    let base = format!("{}/api/users/{SENDER}/transfer-sessions/{tid}", sim.url());
    let eml = b"Subject: hi\r\n\r\nthe confidential text\r\n";
    let mut ids = Vec::new();
    for (name, body) in [("message.eml", &eml[..]), ("a.bin", b"\x00\x01\x02")] {
        let r = raw
            .v(h.post(format!("{base}/files")), &token)
            .json(&json!({"fileName": name, "size": body.len()}))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let fid = v["data"]["fileId"].as_str().unwrap().to_owned();
        let r = raw
            .v(h.put(format!("{base}/files/{fid}/content")), &token)
            .header("Content-Type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(fid);
    }
    let mark = |id: Value| {
        raw.v(h.patch(&base), &token)
            .json(&json!({ "confidentialMessageFileId": id }))
            .send()
    };
    assert_eq!(
        code(mark(json!(ids[0])).await.unwrap()).await,
        (409, Some(2001))
    );
    sim.set_policy(SimPolicy::default());
    assert_eq!(mark(json!("nope")).await.unwrap().status(), 404);
    assert_eq!(mark(json!(ids[1])).await.unwrap().status(), 200);
    let r = mark(json!(ids[0])).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["confidentialMessageFileId"], ids[0].as_str());
    let r = raw.v(h.post(&base), &token).send().await.unwrap();
    assert_eq!(r.status(), 201);

    let t = &sim.transfers()[0];
    let rid = &t.recipient_ids[0].transfer_id;
    let get = |query: &str, password: &str| {
        api_headers(h.get(format!("{}/api/transfers/{rid}/eml{query}", sim.url())))
            .header("X-CS-Password", password)
            .send()
    };
    assert_eq!(
        code(get("", "wrong").await.unwrap()).await,
        (401, Some(3003))
    );
    assert_eq!(
        code(get("?threshold=x", &t.password).await.unwrap()).await,
        (400, Some(1004))
    );
    let r = get("", &t.password).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let body = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    let b = body
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert!(body.starts_with("MIME-Version: 1.0\r\n"), "{body}");
    let parts: Vec<&str> = body.split(&format!("--{b}")).collect();
    assert_eq!(parts.len(), 4, "{body}");
    assert_eq!(
        parts[1],
        "\r\nContent-Type: message/rfc822\r\n\
         Content-Disposition: inline; filename*=UTF-8''message.eml\r\n\
         Content-Transfer-Encoding: 7bit\r\n\r\n\
         Subject: hi\r\n\r\nthe confidential text\r\n\r\n"
    );
    assert_eq!(
        parts[2],
        "\r\nContent-Type: application/octet-stream\r\n\
         Content-Disposition: attachment; filename*=UTF-8''a.bin\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
    );
    assert_eq!(parts[3], "--\r\n");
    // threshold=0 (MB): files larger than nothing are left out.
    let r = get("?threshold=0", &t.password).await.unwrap();
    let body = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(!body.contains("a.bin"), "{body}");
    sim.shutdown().await;
}
