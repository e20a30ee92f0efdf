//! The Cryptshare Server's transfer policy is authoritative (issue 11, items 2, 3, 4, 8): end to
//! end through the gateway against the emulator in its strict modes, asserting the request
//! bodies the emulator received (and validating each against `openapi-1.8.json`).

mod pipeline_support;
mod support;

use cryptshare_gateway::sim::{Endpoint, FaultSpec, SimPolicy, SimRequest, SimSwitches};
use pipeline_support::*;
use serde_json::{Value, json};

/// The request schemas of `openapi-1.8.json`, strict (no undeclared property).
fn request_validator(schema: &str) -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cryptshare/openapi-1.8.json"
    );
    let mut spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (_, s) in spec["components"]["schemas"].as_object_mut().unwrap() {
        if s.get("properties").is_some() {
            s["additionalProperties"] = json!(false);
        }
    }
    let root =
        json!({"$ref": format!("#/components/schemas/{schema}"), "components": spec["components"]});
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(&root)
        .unwrap()
}

/// The bodies of `endpoint`, each checked against its request schema.
fn bodies(requests: &[SimRequest], endpoint: Endpoint) -> Vec<Value> {
    let schema = match endpoint {
        Endpoint::PatchSession => "TransferSessionPatchable",
        Endpoint::CreateSession => "TransferSessionCreationOptions",
        Endpoint::TransferPolicy => "TransferPolicyRequest",
        other => panic!("no schema for {other:?}"),
    };
    let v = request_validator(schema);
    requests
        .iter()
        .filter(|r| r.endpoint == endpoint)
        .map(|r| {
            let errors: Vec<String> = v.iter_errors(&r.body).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{} violates {schema}: {errors:?}",
                r.body
            );
            r.body.clone()
        })
        .collect()
}

fn message(extra_headers: &str, body: &str) -> Vec<u8> {
    mixed(
        &format!(
            "From: Ann <ann@example.org>\r\nTo: bob@partner.test\r\nSubject: Q3 <report>\r\n{extra_headers}"
        ),
        body,
        &[(
            "Content-Type: application/pdf; name=\"report.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"report.pdf\"",
            &payload(4096, 7),
        )],
    )
}

#[tokio::test]
async fn locked_down_policy_converts_with_the_server_defaults_and_patches_no_locked_field() {
    let h = Harness::start(&policy("tempfail")).await;
    h.emu.set_policy(SimPolicy::locked_down());
    let reply = h
        .send(
            "ann@example.org",
            &["bob@partner.test"],
            &message("", "Hello Bob"),
        )
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    let patches = bodies(&h.emu.requests(), Endpoint::PatchSession);
    assert_eq!(patches.len(), 1, "{patches:?}");
    let p = patches[0].as_object().unwrap();
    for locked in [
        "showFileNames",
        "showZipFileContent",
        "sendDownloadNotifications",
        "notificationMessage",
    ] {
        assert!(!p.contains_key(locked), "{locked} sent: {p:?}");
    }
    assert_eq!(
        p["securityMode"],
        json!({"name": "ONE_TIME_PASSWORD", "config": {"passwordMode": "GENERATED"}})
    );
    let t = &h.emu.transfers()[0];
    // The server's defaults of the locked-down policy, not the rule's values.
    assert_eq!(t.settings.show_file_names, Some(true));
    assert_eq!(t.settings.show_zip_file_content, Some(true));
    assert_eq!(t.settings.send_download_notifications, Some(true));
    bodies(&h.emu.requests(), Endpoint::CreateSession);
    bodies(&h.emu.requests(), Endpoint::TransferPolicy);
    h.stop().await;
}

#[tokio::test]
async fn a_locked_field_patched_anyway_is_refused_with_409_2001() {
    use cryptshare_gateway::cryptshare::TransferSessionPatch;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = cryptshare_gateway::sim::SimOptions::new(([127, 0, 0, 1], 0).into(), dir.path());
    opts.policy = SimPolicy::locked_down();
    let emu = Emu::start_with(opts).await;
    let client = cryptshare_gateway::cryptshare::Client::new(
        &emu.url(),
        CLIENT_ID.into(),
        Default::default(),
    )
    .unwrap();
    let new = cryptshare_gateway::cryptshare::NewTransferSession {
        sender: Default::default(),
        recipients: cryptshare_gateway::cryptshare::Recipients {
            to: vec![cryptshare_gateway::cryptshare::Recipient::new(
                "bob@partner.test",
            )],
            ..Default::default()
        },
    };
    let id = client
        .create_session("ann@example.org", None, &new)
        .await
        .unwrap();
    for patch in [
        TransferSessionPatch {
            show_file_names: Some(true),
            ..Default::default()
        },
        TransferSessionPatch {
            send_download_notifications: Some(false),
            ..Default::default()
        },
        TransferSessionPatch {
            notification_message: Some(Default::default()),
            ..Default::default()
        },
    ] {
        let e = client
            .patch_settings("ann@example.org", &id, &patch)
            .await
            .unwrap_err();
        assert_eq!((e.status(), e.error_code()), (Some(409), Some(2001)), "{e}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn a_password_mode_the_server_forbids_is_a_configuration_error_not_a_bounce() {
    let h = Harness::start(&policy("tempfail")).await;
    h.emu.set_policy(SimPolicy {
        allowed_password_modes: vec![cryptshare_gateway::cryptshare::PasswordMode::None],
        ..SimPolicy::default()
    });
    let reply = h
        .send("ann@example.org", &["bob@partner.test"], &message("", "Hi"))
        .await;
    assert!(reply.starts_with("451 4."), "{reply}");
    assert!(reply.contains("password_mode"), "{reply}");
    assert_eq!(h.emu.stats().sessions_created, 0);
    h.stop().await;
}

#[tokio::test]
async fn expiry_at_the_server_limit_keeps_a_day_of_margin_under_whole_day_counting() {
    let extra = policy("tempfail").replace("expiration_days = 7", "expiration_days = 30");
    let h = Harness::start(&extra).await;
    h.emu.set_switches(SimSwitches {
        whole_day_expiry: true,
        ..SimSwitches::default()
    });
    let reply = h
        .send("ann@example.org", &["bob@partner.test"], &message("", "Hi"))
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    let t = &h.emu.transfers()[0];
    let date = t.settings.expiration_date.clone().unwrap();
    let want = (chrono::Utc::now() + chrono::Duration::days(29))
        .format("%Y-%m-%d")
        .to_string();
    assert!(date.starts_with(&want), "{date} (want {want})");
    h.stop().await;
}

#[tokio::test]
async fn a_409_on_the_settings_is_retried_once_with_an_earlier_expiry() {
    let h = Harness::start(&policy("tempfail")).await;
    h.emu
        .inject_fault(FaultSpec::status(Endpoint::PatchSession, 409, Some(2001)).times(1));
    let reply = h
        .send("ann@example.org", &["bob@partner.test"], &message("", "Hi"))
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    // The refused PATCH never reached the handler (the fault answers first): the one logged is
    // the retry, a day earlier than the rule's 7 days (the session's default, 30 days, is later).
    assert_eq!(h.emu.stats().faults_fired, 1);
    let patches = bodies(&h.emu.requests(), Endpoint::PatchSession);
    assert_eq!(patches.len(), 1);
    let want = (chrono::Utc::now() + chrono::Duration::days(6))
        .format("%Y-%m-%d")
        .to_string();
    let date = patches[0]["expirationDate"].as_str().unwrap();
    assert!(date.starts_with(&want), "{date} (want {want})");
    assert_eq!(h.emu.transfers().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn every_settings_property_is_set_from_its_key_and_the_text_is_html_escaped() {
    let extra = format!(
        "{}show_zip_file_content = true\ndownload_summary = true\ndownload_notifications = false\n",
        policy("tempfail")
    );
    let h = Harness::start(&extra).await;
    let reply = h
        .send(
            "ann@example.org",
            &["bob@partner.test"],
            &message("Content-Language: de-CH\r\n", "Line 1 & <b>2</b>\r\nLine 3"),
        )
        .await;
    assert!(reply.starts_with("250 "), "{reply}");
    let patches = bodies(&h.emu.requests(), Endpoint::PatchSession);
    let p = &patches[0];
    assert_eq!(p["showZipFileContent"], json!(true));
    assert_eq!(p["showFileNames"], json!(true));
    assert_eq!(p["sendDownloadSummary"], json!(true));
    assert_eq!(p["sendDownloadNotifications"], json!(false));
    assert_eq!(p["senderLanguage"], json!("en"));
    // recipient_language = "auto": the message's Content-Language.
    assert_eq!(p["recipientLanguage"], json!("de-CH"));
    assert_eq!(p["fileChecksumAlgorithm"], json!("SHA256"));
    assert_eq!(
        p["notificationMessage"],
        json!({"subject": "Q3 <report>", "body": "Line 1 &amp; &lt;b&gt;2&lt;/b&gt;<br>\nLine 3"})
    );
    h.stop().await;
}
