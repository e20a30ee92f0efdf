//! Contract test: every emulator answer of a scripted sender + recipient workflow (successes
//! and errors) is checked against `openapi-1.8.json`: the status must be declared for the
//! operation, and a JSON body must validate against the declared response schema (made strict:
//! no undeclared properties). `$ref`s are resolved locally inside the file; no network.

#[path = "cryptshare_support/mod.rs"]
mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::openapi::{load_spec, spec};
use support::*;

struct Contract {
    spec: Value,
    checked: Vec<String>,
}

impl Contract {
    /// Check one answer of `METHOD template` and return (status, headers, JSON body or Null).
    async fn check(
        &mut self,
        method: Method,
        template: &str,
        resp: reqwest::Response,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let op = &self.spec["paths"][template][method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{method} {template} not in the OpenAPI file"
        );
        let declared = &op["responses"][status.to_string()];
        assert!(
            declared.is_object(),
            "{method} {template}: status {status} not declared (body {:?})",
            String::from_utf8_lossy(&bytes)
        );
        let schema = declared["content"]
            .as_object()
            .and_then(|c| c.values().next())
            .and_then(|m| m["schema"]["$ref"].as_str());
        let body = match schema {
            Some(r) if r.ends_with("/StreamingResponseBody") => Value::Null,
            Some(r) if r.ends_with("/ResponseOfVoid") && bytes.is_empty() => Value::Null,
            Some(r) => {
                let ct = headers["content-type"].to_str().unwrap();
                assert!(ct.starts_with("application/json"), "{template}: {ct}");
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                let errors = spec().validate(r, &body);
                assert!(
                    errors.is_empty(),
                    "{method} {template} {status}: {body} violates {r}: {errors:?}"
                );
                body
            }
            None => {
                assert!(
                    bytes.is_empty(),
                    "{method} {template} {status}: body not declared"
                );
                Value::Null
            }
        };
        self.checked.push(format!("{method} {template} {status}"));
        (status, headers, body)
    }
}

#[tokio::test]
async fn every_response_of_a_full_workflow_matches_the_openapi_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(dir.path()).await;
    let base = sim.url();
    let http = reqwest::Client::new();
    let mut c = Contract {
        spec: load_spec(),
        checked: Vec::new(),
    };
    let u = |p: &str| format!("{base}/api{p}");
    let s = SENDER;

    // Client id and verification.
    let r = api_headers(http.get(u("/clients"))).send().await.unwrap();
    let (st, _, body) = c.check(Method::GET, "/clients", r).await;
    assert_eq!(st, 200);
    assert_eq!(body["data"]["clientId"].as_str().unwrap().len(), 64);

    let r = api_headers(http.get(u(&format!("/users/{s}/verification"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c
        .check(Method::GET, "/users/{email-address}/verification", r)
        .await;
    assert_eq!(body["data"]["verified"], false);
    assert_eq!(
        body["data"]["verificationMethods"],
        json!(["CLIENT_ID", "EMAIL"])
    );

    let tpath = "/users/{email-address}/verification/token";
    let r = api_headers(http.post(u(&format!("/users/{s}/verification/token"))))
        .json(&json!({"verificationCode": "WRONG12345"}))
        .send()
        .await
        .unwrap();
    assert_eq!(c.check(Method::POST, tpath, r).await.0, 403);
    let r = api_headers(http.post(u(&format!("/users/{s}/verification/token"))))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::POST, tpath, r).await;
    assert_eq!(st, 200);
    let token = body["data"]["token"].as_str().unwrap().to_owned();
    assert!(body["data"]["validUntil"].as_str().unwrap().contains('T'));
    let v = |rb: reqwest::RequestBuilder| api_headers(rb).header("X-CS-VerificationToken", &token);

    let r = v(http.get(u(&format!("/users/{s}/verification"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c
        .check(Method::GET, "/users/{email-address}/verification", r)
        .await;
    assert_eq!(body["data"]["verified"], true);

    // Policy: allowed, then not allowed for one recipient.
    let mut policy = sim.policy();
    policy.allowed_recipient_domains = vec!["example.com".into()];
    sim.set_policy(policy);
    let ppath = "/users/{email-address}/transfer-policy";
    let r = v(http.post(u(&format!("/users/{s}/transfer-policy"))))
        .json(&json!({"recipients": ["bob@example.com"]}))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c.check(Method::POST, ppath, r).await;
    assert_eq!(body["data"]["allowed"], true);
    assert_eq!(
        body["data"]["settings"]["securityModes"][0]["config"]["allowedPasswordModes"],
        json!(["GENERATED", "MANUAL", "NONE"])
    );
    let r = v(http.post(u(&format!("/users/{s}/transfer-policy"))))
        .json(&json!({"recipients": ["bob@example.com", "eve@elsewhere.net"]}))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c.check(Method::POST, ppath, r).await;
    assert_eq!(body["data"]["allowed"], false);
    assert_eq!(
        body["data"]["failedRecipients"],
        json!([{"emailAddress": "eve@elsewhere.net", "reason": "POLICY_MISMATCH"}])
    );

    // Sessions: refused combination, then a real one.
    let spath = "/users/{email-address}/transfer-sessions";
    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions"))))
        .json(&json!({"sender": {"name": "Alice"}, "recipients": {"to": [{"mail": "eve@elsewhere.net"}]}}))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::POST, spath, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (403, Some(3011)));
    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions"))))
        .header("Accept-Language", "de")
        .json(&json!({"sender": {"name": "Alice", "phone": "+49 1"},
                      "recipients": {"to": [{"mail": "bob@example.com"}], "cc": [], "bcc": [{"mail": "carol@example.com"}]}}))
        .send()
        .await
        .unwrap();
    let (st, h, _) = c.check(Method::POST, spath, r).await;
    assert_eq!(st, 201);
    let loc = h["location"].to_str().unwrap();
    let tid = loc.rsplit('/').next().unwrap().to_owned();
    assert_eq!(loc, format!("{base}/api/users/{s}/transfer-sessions/{tid}"));
    assert!(
        cryptshare_gateway::cryptshare::is_tracking_id(&tid),
        "{tid}"
    );

    let one = "/users/{email-address}/transfer-sessions/{tracking-id}";
    let r = v(http.get(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c.check(Method::GET, one, r).await;
    assert_eq!(body["data"]["senderLanguage"], "de");
    assert_eq!(body["data"]["files"], json!([]));

    let expiry = cryptshare_gateway::cryptshare::format_date_time(
        &(chrono::Utc::now() + chrono::Duration::days(7)).fixed_offset(),
    );
    let r = v(http.patch(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .json(&json!({"expirationDate": expiry,
                      "securityMode": {"name": "ONE_TIME_PASSWORD", "config": {"passwordMode": "GENERATED"}},
                      "notificationMessage": {"subject": "Invoice", "body": "<p>Hi</p>"},
                      "showFileNames": true, "fileChecksumAlgorithm": "SHA256"}))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::PATCH, one, r).await;
    assert_eq!(st, 200);
    assert_eq!(body["data"]["expirationDate"], expiry.as_str());
    assert_eq!(body["data"]["notificationMessage"]["subject"], "Invoice");
    let too_late = cryptshare_gateway::cryptshare::format_date_time(
        &(chrono::Utc::now() + chrono::Duration::days(90)).fixed_offset(),
    );
    let r = v(http.patch(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .json(&json!({"expirationDate": too_late}))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::PATCH, one, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (409, Some(2001)));
    let r = v(http.patch(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .json(&json!({"recipients": {"to": [{"mail": "x@example.com"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(c.check(Method::PATCH, one, r).await.0, 400);

    // Files: register two, delete one, upload the other.
    let content = b"hello cryptshare\n".repeat(1000);
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content));
    let fpath = "/users/{email-address}/transfer-sessions/{tracking-id}/files";
    let mut ids = Vec::new();
    for name in ["report.txt", "spare.bin"] {
        let r = v(http.post(u(&format!("/users/{s}/transfer-sessions/{tid}/files"))))
            .json(&json!({"fileName": name, "size": content.len(), "checksum": sha}))
            .send()
            .await
            .unwrap();
        let (st, h, body) = c.check(Method::POST, fpath, r).await;
        assert_eq!(st, 201);
        let id = body["data"]["fileId"].as_str().unwrap().to_owned();
        assert_eq!(
            h["location"].to_str().unwrap(),
            format!("{base}/api/users/{s}/transfer-sessions/{tid}/files/{id}")
        );
        ids.push(id);
    }
    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions/{tid}/files"))))
        .json(&json!({"fileName": "report.txt", "size": 1}))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::POST, fpath, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (400, Some(1004)));
    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions/{tid}/files"))))
        .json(&json!({"fileName": "huge.iso", "size": 3_000_000_000u64}))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::POST, fpath, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (403, Some(3011)));
    let r = v(http.delete(u(&format!(
        "/users/{s}/transfer-sessions/{tid}/files/{}",
        ids[1]
    ))))
    .send()
    .await
    .unwrap();
    let (st, _, _) = c
        .check(
            Method::DELETE,
            "/users/{email-address}/transfer-sessions/{tracking-id}/files/{file-id}",
            r,
        )
        .await;
    assert_eq!(st, 204);

    // Finalize before the upload is refused.
    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::POST, one, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (409, Some(2001)));

    let cpath = "/users/{email-address}/transfer-sessions/{tracking-id}/files/{file-id}/content";
    let r = v(http.put(u(&format!(
        "/users/{s}/transfer-sessions/{tid}/files/{}/content",
        ids[0]
    ))))
    .header("Content-Type", "application/octet-stream")
    .body(content.clone())
    .send()
    .await
    .unwrap();
    assert_eq!(c.check(Method::PUT, cpath, r).await.0, 200);

    let r = v(http.get(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c.check(Method::GET, one, r).await;
    assert_eq!(body["data"]["files"][0]["state"], "UPLOADED");
    assert_eq!(body["data"]["files"].as_array().unwrap().len(), 1);

    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .send()
        .await
        .unwrap();
    let (st, h, _) = c.check(Method::POST, one, r).await;
    assert_eq!(st, 201);
    assert_eq!(
        h["location"].to_str().unwrap(),
        format!("{base}/api/users/{s}/transfers/{tid}")
    );
    // The session is gone.
    let r = v(http.get(u(&format!("/users/{s}/transfer-sessions/{tid}"))))
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::GET, one, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (404, Some(2003)));

    // Status: PROCESSING once, then ACTIVE.
    let stpath = "/users/{email-address}/transfers/{tracking-id}";
    let mut states = Vec::new();
    let mut status = Value::Null;
    for _ in 0..2 {
        let r = v(http.get(u(&format!("/users/{s}/transfers/{tid}"))))
            .send()
            .await
            .unwrap();
        let (_, _, body) = c.check(Method::GET, stpath, r).await;
        states.push(body["data"]["status"]["state"].as_str().unwrap().to_owned());
        status = body;
    }
    assert_eq!(states, ["PROCESSING", "ACTIVE"]);
    let recipients = status["data"]["status"]["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 2);
    let rid = recipients[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        recipients[0]["downloadUrl"].as_str().unwrap(),
        format!("{base}/download?id={rid}")
    );

    let r = v(http.get(u(&format!("/users/{s}/transfers?page=1&page-size=10"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c
        .check(Method::GET, "/users/{email-address}/transfers", r)
        .await;
    assert_eq!(body["data"][0]["trackingId"], tid.as_str());

    // Recipient side.
    let password = sim.transfers()[0].password.clone();
    let r = api_headers(http.get(u(&format!("/transfers/{rid}"))))
        .header("X-CS-Password", "wrong")
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::GET, "/transfers/{transfer-id}", r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (401, Some(3003)));
    let r = api_headers(http.get(u(&format!("/transfers/{rid}"))))
        .header("X-CS-Password", &password)
        .send()
        .await
        .unwrap();
    let (_, _, body) = c.check(Method::GET, "/transfers/{transfer-id}", r).await;
    assert_eq!(body["data"]["totalSize"], content.len());
    let r = api_headers(http.get(u(&format!("/transfers/{rid}/files?password={password}"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c
        .check(Method::GET, "/transfers/{transfer-id}/files", r)
        .await;
    assert_eq!(body["data"][0]["fileName"], "report.txt");
    assert_eq!(body["data"][0]["checksum"], sha.as_str());
    let r = api_headers(http.get(u(&format!("/transfers/{rid}/files/{}", ids[0]))))
        .header("X-CS-Password", &password)
        .send()
        .await
        .unwrap();
    let (st, _, _) = c
        .check(Method::GET, "/transfers/{transfer-id}/files/{file-id}", r)
        .await;
    assert_eq!(st, 200);

    // The status now records the download.
    let r = v(http.get(u(&format!("/users/{s}/transfers/{tid}"))))
        .send()
        .await
        .unwrap();
    let (_, _, body) = c.check(Method::GET, stpath, r).await;
    let dl = &body["data"]["status"]["recipients"][0]["fileDownloads"][0]["downloads"];
    assert_eq!(dl.as_array().unwrap().len(), 1);

    // Version and header errors use the Error schema too.
    let r = http
        .get(u(&format!("/users/{s}/transfers/{tid}")))
        .header("X-CS-MajorApiVersion", "1")
        .header("X-CS-MinimumMinorApiVersion", "99")
        .header("X-CS-ClientId", CLIENT_ID)
        .send()
        .await
        .unwrap();
    let (st, _, body) = c.check(Method::GET, stpath, r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (404, Some(2004)));
    let r = http.get(u("/clients")).send().await.unwrap();
    let (st, _, body) = c.check(Method::GET, "/clients", r).await;
    assert_eq!((st, body["errorCode"].as_i64()), (400, Some(1002)));

    // A second session, deleted.
    let r = v(http.post(u(&format!("/users/{s}/transfer-sessions"))))
        .json(&json!({"sender": {}, "recipients": {"to": [{"mail": "bob@example.com"}]}}))
        .send()
        .await
        .unwrap();
    let (_, h, _) = c.check(Method::POST, spath, r).await;
    let tid2 = h["location"]
        .to_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let r = v(http.delete(u(&format!("/users/{s}/transfer-sessions/{tid2}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(c.check(Method::DELETE, one, r).await.0, 204);

    assert!(c.checked.len() >= 35, "{:?}", c.checked);
    assert_eq!(sim.stats().sessions_created, 2);
    assert_eq!(sim.stats().sessions_deleted, 1);
    sim.shutdown().await;
}

/// The checker itself must catch deviations (else the test above could not fail).
#[test]
fn the_schema_check_rejects_deviations() {
    let validate = |r: &str, body: Value| -> usize { spec().validate(r, &body).len() };
    let status = "#/components/schemas/ResponseOfTransferStatus";
    assert_eq!(
        validate(
            status,
            json!({"data": {"status": {"state": "ACTIVE"}}, "meta": {}})
        ),
        0
    );
    assert!(
        validate(
            status,
            json!({"data": {"status": {"state": "BOGUS"}}, "meta": {}})
        ) > 0
    );
    assert!(
        validate(
            status,
            json!({"data": {"status": {"extra": 1}}, "meta": {}})
        ) > 0
    );
    assert!(
        validate(
            status,
            json!({"data": {"transfer": {"classificationId": null}}})
        ) > 0
    );
    let policy = "#/components/schemas/ResponseOfTransferPolicyResult";
    let modes = |m: Value| json!({"data": {"settings": {"securityModes": [m]}}});
    assert_eq!(
        validate(
            policy,
            modes(
                json!({"name": "ONE_TIME_PASSWORD", "config": {"allowedPasswordModes": ["NONE"]}})
            )
        ),
        0
    );
    assert!(validate(policy, modes(json!({"name": "X", "config": {}}))) > 0);
}

/// The exchange validator every emulator test runs at its end must catch a wrong body on
/// either side, an undeclared status and an unknown operation.
#[test]
fn the_exchange_validator_rejects_invalid_requests_and_answers() {
    use cryptshare_gateway::sim::SimExchange;
    use support::openapi::check_exchanges;
    let policy = |request: Value, status: u16, response: Value| SimExchange {
        method: "POST".into(),
        path: format!("/api/users/{SENDER}/transfer-policy"),
        request_content_type: Some("application/json".into()),
        request_len: Some(request.to_string().len() as u64),
        request: Some(request),
        status,
        response_content_type: Some("application/json".into()),
        response_len: Some(response.to_string().len() as u64),
        response: Some(response),
        injected_fault: false,
        nulls_and_extra_fields: false,
    };
    let good = policy(
        json!({"recipients": ["bob@example.com"]}),
        200,
        json!({"data": {"allowed": true}}),
    );
    assert_eq!(
        check_exchanges(std::slice::from_ref(&good)),
        Vec::<String>::new()
    );

    let bad_request = policy(
        json!({"recipients": "bob@example.com"}),
        200,
        json!({"data": {"allowed": true}}),
    );
    let e = check_exchanges(&[bad_request]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("POST /users/{email-address}/transfer-policy 200: request ")
            && e[0].contains("is not of type \"array\" at /recipients"),
        "{e:?}"
    );

    let extra = policy(
        json!({"recipients": []}),
        200,
        json!({"data": {"allowed": true, "bonus": 1}}),
    );
    let e = check_exchanges(std::slice::from_ref(&extra));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("violates #/components/schemas/ResponseOfTransferPolicyResult")
            && e[0].contains("'bonus' was unexpected"),
        "{e:?}"
    );
    // With nulls_and_extra_fields only the deliberate noise is forgiven.
    let mut noisy = extra;
    noisy.nulls_and_extra_fields = true;
    assert_eq!(check_exchanges(&[noisy.clone()]).len(), 1);
    noisy.response = Some(json!({"data": {"allowed": true, "failedRecipients": null,
        "simExtension": {"note": "x"}}, "simExtension": {"note": "x"}}));
    assert_eq!(check_exchanges(&[noisy]), Vec::<String>::new());

    let e = check_exchanges(&[policy(
        json!({"recipients": []}),
        409,
        json!({"errorCode": 2001}),
    )]);
    assert_eq!(
        e,
        [
            r#"POST /users/{email-address}/transfer-policy 409: status not declared (body Some(Object {"errorCode": Number(2001)}))"#
        ]
    );

    // Former known deviations are caught: 401 where only 403 is declared, 501 on PATCH.
    let e = check_exchanges(&[policy(
        json!({"recipients": []}),
        401,
        json!({"errorCode": 3002, "errorMessage": "x"}),
    )]);
    assert_eq!(
        e,
        [
            r#"POST /users/{email-address}/transfer-policy 401: status not declared (body Some(Object {"errorCode": Number(3002), "errorMessage": String("x")}))"#
        ]
    );
    let mut quick = policy(
        json!({"securityMode": {"name": "QUICK", "config": {}}}),
        501,
        json!({"errorCode": 5001, "errorMessage": "Unsupported operation: QUICK"}),
    );
    quick.method = "PATCH".into();
    quick.path = format!("/api/users/{SENDER}/transfer-sessions/ABCDEFGHIJ");
    let e = check_exchanges(&[quick]);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with(
            "PATCH /users/{email-address}/transfer-sessions/{tracking-id} 501: request "
        ) && e[0].ends_with(
            r#"violates: "QUICK" is not one of "ONE_TIME_PASSWORD" at /securityMode/name"#
        ),
        "{e:?}"
    );
    assert!(
        e[1].starts_with(
            "PATCH /users/{email-address}/transfer-sessions/{tracking-id} 501: status not declared"
        ),
        "{e:?}"
    );
    // What stays: 404/1006 for a path that is no operation, with a strict Error body.
    let mut nowhere = good.clone();
    nowhere.path = "/api/nope".into();
    nowhere.status = 404;
    nowhere.response = Some(json!({"errorCode": 1006, "errorMessage": "no"}));
    assert_eq!(
        check_exchanges(std::slice::from_ref(&nowhere)),
        Vec::<String>::new()
    );
    nowhere.response = Some(json!({"errorCode": 1006, "extra": 1}));
    assert_eq!(check_exchanges(&[nowhere]).len(), 1);

    let mut unknown = good.clone();
    unknown.path = "/api/users/a@b.c/transfer-polizy".into();
    unknown.status = 200;
    assert_eq!(
        check_exchanges(&[unknown]),
        ["POST /api/users/a@b.c/transfer-polizy: not an operation of the OpenAPI file"]
    );

    // An answer without the declared body (201 of session creation has none; 200 of the
    // policy must have one).
    let mut empty = good;
    empty.response = None;
    empty.response_len = Some(0);
    let e = check_exchanges(&[empty]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].ends_with("200: response body missing or not logged"),
        "{e:?}"
    );
}
