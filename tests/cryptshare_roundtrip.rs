//! Client ↔ emulator: the whole sender workflow through `cryptshare::Client`, then the
//! recipient download, comparing SHA-256; and what the notification mails contain.

#[path = "cryptshare_support/mod.rs"]
mod support;

use std::time::Duration;

use cryptshare_gateway::cryptshare::*;
use support::*;

fn new_session() -> NewTransferSession {
    NewTransferSession {
        sender: Sender {
            name: Some("Alice Example".into()),
            phone: Some("+49 30 1234".into()),
        },
        recipients: Recipients {
            to: vec![Recipient::new("bob@example.com")],
            cc: vec![],
            bcc: vec![Recipient::new("carol@example.net")],
        },
    }
}

fn patch(mode: PasswordMode) -> TransferSessionPatch {
    TransferSessionPatch {
        expiration_date: Some(format_date_time(
            &(chrono::Utc::now() + chrono::Duration::days(14)).fixed_offset(),
        )),
        security_mode: Some(SecurityMode::one_time_password(mode, None)),
        notification_message: Some(NotificationMessage {
            subject: Some("Quarterly figures".into()),
            body: Some("Please find the figures.".into()),
        }),
        show_file_names: Some(true),
        send_recipient_notification: Some(true),
        send_upload_summary: Some(true),
        file_checksum_algorithm: Some("SHA256".into()),
        ..TransferSessionPatch::default()
    }
}

#[tokio::test]
async fn twenty_megabytes_round_trip_with_generated_password() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir.path().join("sim")).await;
    let cs = client(&sim);
    let src = dir.path().join("figures.bin");
    let size = 20 * 1024 * 1024 + 123;
    let sha = write_random_file(&src, size, 7);

    let rcpts = vec!["bob@example.com".to_owned(), "carol@example.net".to_owned()];
    let policy = cs.transfer_policy(SENDER, &rcpts).await.unwrap();
    assert!(policy.allowed);
    let settings = policy.settings.unwrap();
    assert_eq!(settings.max_retention_period, 30);
    assert!(
        settings
            .allowed_password_modes()
            .contains(&PasswordMode::Generated)
    );

    let tid = cs
        .create_session(SENDER, Some("de"), &new_session())
        .await
        .unwrap();
    assert!(is_tracking_id(&tid));
    let session = cs
        .patch_settings(SENDER, &tid, &patch(PasswordMode::Generated))
        .await
        .unwrap();
    assert_eq!(session.sender_language.as_deref(), Some("de"));
    assert_eq!(session.show_file_names, Some(true));
    let fid = cs
        .register_file(SENDER, &tid, "Zahlen Q3 (final).bin", size, &sha)
        .await
        .unwrap();
    cs.upload_path(SENDER, &tid, &fid, &src, 0, size)
        .await
        .unwrap();
    let s = cs.get_session(SENDER, &tid).await.unwrap();
    assert_eq!(s.files.unwrap()[0].state, "UPLOADED");
    cs.finalize(SENDER, &tid).await.unwrap();
    let status = cs
        .wait_active(SENDER, &tid, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.status.state, TransferState::Active);
    let urls = status.download_urls();
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[0].0, "bob@example.com");
    assert!(
        urls[0]
            .1
            .starts_with(&format!("{}/download?id=", sim.url()))
    );
    assert!(!urls[0].1.contains("password"), "{}", urls[0].1);

    // The session is gone after finalize.
    let gone = cs.get_session(SENDER, &tid).await.unwrap_err();
    assert_eq!((gone.status(), gone.error_code()), (Some(404), Some(2003)));

    // Streamed upload with a declared length, once.
    let stats = sim.stats();
    assert_eq!((stats.uploads, stats.uploads_without_length), (1, 0));
    assert_eq!(stats.tokens_issued, 1);

    let t = &sim.transfers()[0];
    assert_eq!(t.files[0].uploaded_sha256, sha);
    assert_eq!(t.files[0].uploaded_size, size);
    assert_eq!(t.accept_language.as_deref(), Some("de"));
    assert_eq!(t.password_mode, PasswordMode::Generated);
    for r in &t.recipient_ids {
        let (n, got) = download_sha256(&sim.url(), &r.transfer_id, &fid, &t.password).await;
        assert_eq!((n, got.as_str()), (size, sha.as_str()));
    }

    // Mails: one per recipient with its link, one to the sender with the password.
    let mails = mails(&sim);
    assert_eq!(
        mails.len(),
        3,
        "{:?}",
        mails.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    for r in &t.recipient_ids {
        let (_, text) = mails
            .iter()
            .find(|(n, _)| *n == format!("{tid}-recipient-{}.eml", r.transfer_id))
            .unwrap();
        assert!(text.contains(&format!("To: <{}>\r\n", r.mail)));
        assert!(text.contains("Subject: Quarterly figures\r\n"));
        assert!(text.contains(&format!("Download: {}\r\n", r.download_url)));
        assert!(text.contains("Zahlen Q3 (final).bin (20.0 MB)"));
        assert!(!text.contains(&t.password));
    }
    let (_, sender_mail) = mails
        .iter()
        .find(|(n, _)| *n == format!("{tid}-sender.eml"))
        .unwrap();
    assert!(sender_mail.contains(&format!("To: <{SENDER}>\r\n")));
    assert!(sender_mail.contains(&format!("Password: {}\r\n", t.password)));
    sim.shutdown().await;
}

#[tokio::test]
async fn password_mode_none_puts_the_password_into_the_link_and_byte_ranges_upload() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir.path().join("sim")).await;
    let cs = client(&sim);
    // Upload bytes 1000..1000+300000 of a larger file.
    let src = dir.path().join("mail.eml");
    write_random_file(&src, 400_000, 3);
    let all = std::fs::read(&src).unwrap();
    let part = &all[1000..301_000];
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(part));

    let tid = cs
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap();
    let mut p = patch(PasswordMode::None);
    p.send_upload_summary = Some(false);
    cs.patch_settings(SENDER, &tid, &p).await.unwrap();
    let fid = cs
        .register_file(SENDER, &tid, "part.bin", part.len() as u64, &sha)
        .await
        .unwrap();
    cs.upload_path(SENDER, &tid, &fid, &src, 1000, part.len() as u64)
        .await
        .unwrap();
    cs.finalize(SENDER, &tid).await.unwrap();
    let status = cs
        .wait_active(SENDER, &tid, Duration::from_secs(10))
        .await
        .unwrap();
    let t = &sim.transfers()[0];
    let (_, url) = &status.download_urls()[0];
    assert!(url.ends_with(&format!("&password={}", t.password)), "{url}");
    let (n, got) = download_sha256(
        &sim.url(),
        &t.recipient_ids[0].transfer_id,
        &fid,
        &t.password,
    )
    .await;
    assert_eq!((n, got), (part.len() as u64, sha));
    // The link itself works for a browser: a file list, then the file.
    let http = reqwest::Client::new();
    let page = http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let href = page
        .split("href=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    assert!(page.contains(">part.bin</a>"), "{page}");
    let file = http
        .get(format!("{}/{href}", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        file.headers()["content-disposition"],
        "attachment; filename*=UTF-8''part.bin"
    );
    assert_eq!(&file.bytes().await.unwrap()[..], part);
    let wrong = url.replace(&t.password, "wrong");
    assert_eq!(http.get(wrong).send().await.unwrap().status(), 401);
    let no_pw = url.split("&password").next().unwrap();
    let form = http.get(no_pw).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("type=\"password\""), "{form}");
    // No upload summary requested: only the two recipient mails.
    let names: Vec<String> = mails(&sim).into_iter().map(|m| m.0).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.contains("-recipient-")));
}

#[tokio::test]
async fn a_checksum_mismatch_ends_in_failed_and_a_short_source_is_not_sent_silently() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir.path().join("sim")).await;
    let cs = client(&sim);
    let tid = cs
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap();
    let fid = cs
        .register_file(SENDER, &tid, "a.txt", 5, &"0".repeat(64))
        .await
        .unwrap();
    // The stream yields fewer bytes than declared: the upload fails instead of sending less.
    let short = cs
        .upload_file(SENDER, &tid, &fid, 5, || async {
            Ok(futures_util::stream::iter(vec![Ok(
                bytes::Bytes::from_static(b"abc"),
            )]))
        })
        .await
        .unwrap_err();
    assert!(short.is_temporary(), "{short}");
    cs.upload_file(SENDER, &tid, &fid, 5, || async {
        Ok(futures_util::stream::iter(vec![Ok(
            bytes::Bytes::from_static(b"hello"),
        )]))
    })
    .await
    .unwrap();
    cs.finalize(SENDER, &tid).await.unwrap();
    let e = cs
        .wait_active(SENDER, &tid, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.is_refused(), "{e}");
    let st = cs.transfer_status(SENDER, &tid).await.unwrap();
    assert_eq!(st.status.state, TransferState::Failed);
    assert_eq!(
        st.status.files[0].removal_cause.as_deref(),
        Some("CHECKSUM_MISMATCH")
    );
    // A failed transfer sends no notification.
    assert!(mails(&sim).is_empty());
}

#[tokio::test]
async fn delete_session_on_abort_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(&dir.path().join("sim")).await;
    let cs = client(&sim);
    let tid = cs
        .create_session(SENDER, None, &new_session())
        .await
        .unwrap();
    let fid = cs
        .register_file(SENDER, &tid, "x", 1, &"0".repeat(64))
        .await
        .unwrap();
    cs.upload_file(SENDER, &tid, &fid, 1, || async {
        Ok(futures_util::stream::iter(vec![Ok(
            bytes::Bytes::from_static(b"x"),
        )]))
    })
    .await
    .unwrap();
    let files_dir = sim.data_dir().join("files").join(&tid);
    assert!(files_dir.join(&fid).is_file());
    cs.delete_session(SENDER, &tid).await.unwrap();
    cs.delete_session(SENDER, &tid).await.unwrap();
    assert!(!files_dir.exists());
    assert_eq!(sim.stats().sessions_deleted, 1);
    assert_eq!(sim.open_sessions(), 0);
}
