//! The path of one message at the end of DATA, as named steps:
//!
//! ```text
//! plan ──pass──────────────────────────────────────────────▶ relay ─▶ outcome
//!   └─convert─▶ transfer ─ok─▶ rewrite ─────────────────────▶ relay ─▶ outcome
//!                  └─failed─▶ outcome::on_failure ─original─▶ relay ─▶ outcome
//!                                                 └─reply──────────▶ outcome
//! ```
//!
//! Every branch ends in the [`Recorder`](super::outcome::Recorder), which writes the audit line
//! and returns the client's reply: `250` only after the next hop's `250`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gateway::{Gateway, Live};
use super::message_key;
use super::outcome::{self, Failure, Report};
use super::plan::{Action, Plan};
use super::transfer::{ConvertError, Converted, Job};
use crate::config::{DkimSign, Links, OnError, PolicyConfig};
use crate::envelope::RcptTo;
use crate::inbound::{ConnectionInfo, PeerProbe, Transaction};
use crate::mime::{self, Analysis, Language, PartId};
use crate::ops::audit::Decision;
use crate::outbound::{ClientOrigin, RelayTransaction};
use crate::replies::{self, Reply};
use crate::store::spool::Spooled;
use crate::store::state::Record;

/// What became of one message: the client's reply, and with per-recipient links each copy's
/// own reply (empty otherwise: `reply` holds for every recipient).
pub(super) struct Delivery {
    pub reply: Reply,
    pub each: Vec<(String, Reply)>,
}

impl From<Reply> for Delivery {
    fn from(reply: Reply) -> Delivery {
        Delivery {
            reply,
            each: Vec::new(),
        }
    }
}

pub(super) async fn process(gw: &Arc<Gateway>, tx: &mut RelayTransaction, t: Transaction) -> Reply {
    process_each(gw, tx, t, None).await.reply
}

/// One delivery attempt of a queued message (spool mode).
pub(super) struct SpoolAttempt<'a> {
    /// Every recipient of the envelope (an attempt has only those still pending): with
    /// per-recipient links the transfer is for all of them, so that a later attempt finds it
    /// again (same message key).
    pub all: &'a [String],
    /// 1 for the first attempt; in the audit line.
    pub number: u32,
}

/// As [`process`], with each recipient's reply; `spool` for an attempt of a queued message.
pub(super) async fn process_each(
    gw: &Arc<Gateway>,
    tx: &mut RelayTransaction,
    t: Transaction,
    spool: Option<SpoolAttempt<'_>>,
) -> Delivery {
    let all = spool.as_ref().map(|s| s.all);
    let Transaction {
        queue_id,
        mail_from,
        rcpts,
        received,
        message,
        client,
    } = t;
    let rcpts: Vec<String> = rcpts.iter().map(|r| r.address.clone()).collect();
    let mut report = Report::new(&queue_id, &mail_from.address, &rcpts, &message);
    if let Some(s) = &spool {
        report.attempt(s.number);
    }
    let message = Arc::new(message);
    let (plan, conversion) =
        plan_message(&gw.live(), &mail_from.address, &rcpts, all, &message).await;
    report.planned(&plan);
    let Some(c) = conversion else {
        return relay(
            gw,
            tx,
            (&received, &client),
            message.as_bytes(),
            report,
            Decision::Pass,
        )
        .await
        .into();
    };

    let job = Job {
        cs: &gw.cryptshare,
        state: &gw.state,
        policy: &c.policy,
        key: &c.key,
        sender: &mail_from.address,
        rcpts: &c.rcpts,
        message: message.clone(),
        analysis: &c.analysis,
        selection: &c.selection,
        whole_message: c.whole_message,
    };
    let (converted, spent) = match gw.hold(&c.key).await {
        Ok(_same_message) => {
            // Timed from here: waiting for another attempt at the same message is not
            // Cryptshare's.
            let started = Instant::now();
            (job.run().await, started.elapsed())
        }
        Err(e) => (Err(ConvertError::State(e)), Duration::ZERO),
    };
    match converted {
        Ok(converted) if c.policy.links == Links::PerRecipient => {
            report.converted(&converted);
            let delivery = per_recipient(
                gw,
                tx,
                (&received, &client),
                &message,
                &c,
                &converted,
                report,
            )
            .await;
            if delivery.reply.is_positive() {
                sender_receipt(
                    gw,
                    &c,
                    &c.key,
                    &c.rcpts,
                    &converted,
                    &mail_from.address,
                    &message,
                )
                .await;
            }
            delivery
        }
        Ok(converted) => {
            report.converted(&converted);
            match rewrite(&message, &c, &converted, None) {
                Ok(rewritten) => {
                    let reply = relay(
                        gw,
                        tx,
                        (&received, &client),
                        &rewritten,
                        report,
                        Decision::Convert,
                    )
                    .await;
                    if reply.is_positive() {
                        sender_receipt(
                            gw,
                            &c,
                            &c.key,
                            &c.rcpts,
                            &converted,
                            &mail_from.address,
                            &message,
                        )
                        .await;
                    }
                    reply.into()
                }
                Err(e) => {
                    // The transfer exists and is recorded; a retry will reuse it.
                    tracing::error!(queue_id = %queue_id, error = %e, "rewrite failed");
                    report.rewrite_failed(&e);
                    gw.recorder.rewrite_failed(report).into()
                }
            }
        }
        Err(ConvertError::RecipientsRefused { refused, text })
            if c.policy.on_error == OnError::DeliverOriginal =>
        {
            tracing::info!(
                queue_id = %queue_id,
                refused = %refused.join(", "),
                "the Cryptshare policy refuses some recipients: converting for the others, the original to these"
            );
            let mail = (mail_from.address.as_str(), rcpts.as_slice());
            let message_in = (&received[..], &client, &message);
            split_delivery(gw, tx, mail, message_in, &c, &refused, &text, report)
                .await
                .into()
        }
        Err(e) => {
            tracing::warn!(queue_id = %queue_id, error = %e, "conversion failed");
            report.conversion_failed(&e, spent);
            match outcome::on_failure(&e, c.policy.on_error) {
                Failure::DeliverOriginal => {
                    let original = message.as_bytes();
                    relay(
                        gw,
                        tx,
                        (&received, &client),
                        original,
                        report,
                        Decision::DeliverOriginal,
                    )
                    .await
                    .into()
                }
                Failure::Reply(reply) => gw.recorder.refused(report, reply).into(),
            }
        }
    }
}

/// `links = "per-recipient"`: one copy of the rewritten message per accepted recipient, each
/// with that recipient's own link, each its own next-hop transaction (split off the one the
/// client's envelope opened, as [`split_delivery`] does). Exactly once per recipient: a copy the
/// next hop took is recorded in the state store before the next one goes out, and a retry of
/// the message (same key, hence the same transfer) skips the recorded ones. The key lock is
/// held throughout, so a second attempt at the same message waits and then sends only what is
/// still missing.
///
/// The client's reply (one per message): `250` when every copy is with the next hop (now or
/// earlier); else the first copy's 4xx (the upstream retries; only the missing copies go);
/// else, when every copy failed for good, the next hop's 5xx; and when some were delivered and
/// the others refused for good, that 5xx naming who got their copy
/// ([`replies::copies_partly_refused`]; see docs/cryptshare.md).
async fn per_recipient(
    gw: &Arc<Gateway>,
    tx: &mut RelayTransaction,
    (received, client): (&[u8], &PeerProbe),
    message: &Spooled,
    c: &Conversion,
    converted: &Converted,
    mut report: Report,
) -> Delivery {
    let _same_message = match gw.hold(&c.key).await {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(error = %e, "cannot hold the message for its copies");
            return gw
                .recorder
                .refused(report, replies::local_error("state store"))
                .into();
        }
    };
    let earlier = match gw.state.get(&c.key).await {
        Ok(Some(Record::Finished { delivered, .. })) => delivered,
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the delivered copies");
            return gw
                .recorder
                .refused(report, replies::local_error("state store"))
                .into();
        }
    };
    let started = Instant::now();
    let mut rcpts: Vec<RcptTo> = tx.recipients().to_vec();
    let mut seen = std::collections::HashSet::new();
    rcpts.retain(|r| seen.insert(r.address.to_ascii_lowercase()));
    let mut each: Vec<(String, Reply)> = Vec::new();
    let mut delivered: Vec<String> = Vec::new();
    let mut skipped = 0;
    let mut hop = None;
    let mut sent_now: Option<Reply> = None;
    for r in &rcpts {
        let address = r.address.clone();
        let mut one = tx
            .split_off(&|x: &RcptTo| !x.address.eq_ignore_ascii_case(&address))
            .await;
        if earlier.iter().any(|d| d.eq_ignore_ascii_case(&address)) {
            // `one` is dropped unsent: its envelope never reached the next hop.
            skipped += 1;
            delivered.push(address.clone());
            each.push((
                address,
                replies::relayed("copy delivered by an earlier attempt"),
            ));
            continue;
        }
        let Some(link) = converted.link_for(&address) else {
            tracing::error!(tracking_id = %converted.tracking_id, "the transfer status has no download link for a recipient");
            each.push((address, replies::no_recipient_link()));
            continue;
        };
        let copy = match rewrite(message, c, converted, Some(link)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "rewrite failed");
                report.rewrite_failed(&e);
                return gw.recorder.rewrite_failed(report).into();
            }
        };
        let signature = dkim_signature(gw, Decision::Convert, &copy);
        let reply = one
            .data_unless(&[&signature, received, &copy], &|| client.connected())
            .await;
        hop = one.next_hop_reply().cloned().or(hop);
        if reply.is_positive() {
            if let Err(e) = gw.state.mark_delivered(&c.key, &address).await {
                // The copy is with the next hop; a retry may send it again (a duplicate, never
                // a loss).
                tracing::error!(error = %e, "cannot record a delivered copy");
            }
            delivered.push(address.clone());
            sent_now = Some(reply.clone());
        } else {
            tracing::warn!(reply = %reply.to_string().trim_end(), "a per-recipient copy was not accepted");
        }
        each.push((address, reply));
    }
    report.copies(delivered.len() - skipped, skipped, rcpts.len());
    let transient = each.iter().find(|(_, r)| r.is_transient());
    let refused: Vec<String> = each
        .iter()
        .filter(|(_, r)| r.is_permanent())
        .map(|(a, _)| a.clone())
        .collect();
    let reply = if let Some((_, r)) = transient {
        r.clone()
    } else if let Some((_, first)) = each.iter().find(|(_, r)| r.is_permanent()) {
        if delivered.is_empty() {
            first.clone()
        } else {
            replies::copies_partly_refused(first, &refused, &delivered)
        }
    } else {
        // The next hop's word on a copy sent now, else that they all went earlier.
        sent_now
            .or_else(|| each.last().map(|(_, r)| r.clone()))
            .unwrap_or_else(replies::no_valid_recipients)
    };
    let reply = gw.recorder.relayed(
        report,
        Decision::Convert,
        reply,
        hop.as_ref(),
        started.elapsed(),
    );
    Delivery { reply, each }
}

/// Partial refusal with `deliver-original`: the Cryptshare policy refuses `refused`, not every
/// recipient. The others get the converted message (a transfer for them only), `refused` get
/// the original; at the next hop these are two transactions, the converted one first. The
/// client's reply is 250 only when both were accepted; otherwise the failing one's reply — a
/// retry then sends the notice again (it reuses the transfer: one transfer, but a second copy
/// of the notice for the allowed recipients). With `tempfail` or `reject` the whole message is
/// refused instead (`554 5.7.1` naming the refused recipients, `outcome::on_failure`): SMTP has
/// one reply per message at the end of DATA, and 250 would promise delivery to them.
#[allow(clippy::too_many_arguments)]
async fn split_delivery(
    gw: &Arc<Gateway>,
    tx: &mut RelayTransaction,
    (sender, rcpts): (&str, &[String]),
    (received, client, message): (&[u8], &PeerProbe, &Arc<Spooled>),
    c: &Conversion,
    refused: &[String],
    why: &str,
    mut report: Report,
) -> Reply {
    let allowed: Vec<String> = rcpts
        .iter()
        .filter(|r| !refused.contains(r))
        .cloned()
        .collect();
    // The transfer is for the allowed recipients: its own key (a retry gets the same answer
    // from the server's policy and finds this transfer).
    let key = {
        let (message, sender, allowed) = (message.clone(), sender.to_string(), allowed.clone());
        tokio::task::spawn_blocking(move || message_key(&sender, &allowed, message.as_bytes()))
            .await
            .unwrap_or_default()
    };
    let job = Job {
        cs: &gw.cryptshare,
        state: &gw.state,
        policy: &c.policy,
        key: &key,
        sender,
        rcpts: &allowed,
        message: message.clone(),
        analysis: &c.analysis,
        selection: &c.selection,
        whole_message: c.whole_message,
    };
    let (converted, spent) = match gw.hold(&key).await {
        Ok(_same_message) => {
            let started = Instant::now();
            (job.run().await, started.elapsed())
        }
        Err(e) => (Err(ConvertError::State(e)), Duration::ZERO),
    };
    let converted = match converted {
        Ok(converted) => converted,
        Err(e) => {
            // As for any failure (`deliver-original`): the original to everyone, unless the
            // transfer may exist or the fault is ours.
            tracing::warn!(error = %e, "conversion for the allowed recipients failed");
            report.conversion_failed(&e, spent);
            return match outcome::on_failure(&e, OnError::DeliverOriginal) {
                Failure::DeliverOriginal => {
                    relay(
                        gw,
                        tx,
                        (received, client),
                        message.as_bytes(),
                        report,
                        Decision::DeliverOriginal,
                    )
                    .await
                }
                Failure::Reply(reply) => gw.recorder.refused(report, reply),
            };
        }
    };
    report.converted(&converted);
    report.partly_refused(refused, why);
    let rewritten = match rewrite(message, c, &converted, None) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "rewrite failed");
            report.rewrite_failed(&e);
            return gw.recorder.rewrite_failed(report);
        }
    };
    let mut others = tx
        .split_off(&|r: &RcptTo| !refused.contains(&r.address))
        .await;
    let started = Instant::now();
    let signature = dkim_signature(gw, Decision::Convert, &rewritten);
    let first = tx
        .data_unless(&[&signature, received, &rewritten], &|| client.connected())
        .await;
    if !first.is_positive() {
        let hop = tx.next_hop_reply().cloned();
        return gw.recorder.relayed(
            report,
            Decision::Convert,
            first,
            hop.as_ref(),
            started.elapsed(),
        );
    }
    let signature = dkim_signature(gw, Decision::DeliverOriginal, message.as_bytes());
    let second = others
        .data_unless(&[&signature, received, message.as_bytes()], &|| {
            client.connected()
        })
        .await;
    if !second.is_positive() {
        tracing::error!(
            reply = %second,
            "the converted message went to the allowed recipients, the original to the refused ones failed: the retry sends the notice again"
        );
    }
    let hop = if second.is_positive() {
        tx.next_hop_reply().cloned()
    } else {
        others.next_hop_reply().cloned()
    };
    let reply = if second.is_positive() {
        // The allowed recipients have the converted message: the receipt names them only.
        sender_receipt(gw, c, &key, &allowed, &converted, sender, message).await;
        first
    } else {
        second
    };
    gw.recorder.relayed(
        report,
        Decision::Convert,
        reply,
        hop.as_ref(),
        started.elapsed(),
    )
}

/// A message the plan wants converted: what the transfer and rewrite steps need.
struct Conversion {
    policy: PolicyConfig,
    analysis: Analysis,
    selection: Vec<PartId>,
    /// The message key for the state store.
    key: String,
    /// The transfer's recipients: the envelope's (see [`process_each`]).
    rcpts: Vec<String>,
    /// Whole-message mode (`content = "message"`, or the tag with `subject_tag_message`).
    whole_message: bool,
}

/// The plan step in `serve`: match the rule, analyse the message, plan.
///
/// A sender without a rule is relayed without analysis (it would touch every byte of a possibly
/// huge message for nothing); `explain` analyses anyway and gets the same reason from
/// [`Plan::unmatched`].
async fn plan_message(
    live: &Live,
    from: &str,
    rcpts: &[String],
    all: Option<&[String]>,
    message: &Arc<Spooled>,
) -> (Plan, Option<Conversion>) {
    let Some(policy) = live.rules.match_sender(from).cloned() else {
        return (Plan::unmatched(0), None);
    };
    let transfer_rcpts = match all {
        Some(all) if policy.links == Links::PerRecipient => all.to_vec(),
        _ => rcpts.to_vec(),
    };
    // Analysis touches every byte of a possibly huge message: off the async workers.
    let analysed = {
        let message = message.clone();
        let mut policy = policy.clone();
        let from = from.to_string();
        let rcpts = rcpts.to_vec();
        let transfer_rcpts = transfer_rcpts.clone();
        tokio::task::spawn_blocking(move || {
            let raw = message.as_bytes();
            // `auto` is decided once, here: the notice, the receipt and the Cryptshare session
            // all write in the language this leaves in the rule.
            policy.language = super::facts::notice_language(&policy, raw)
                .tag()
                .to_string();
            let analysis = mime::analyse(raw);
            let plan = Plan::for_policy(&policy, &analysis, &rcpts);
            // Hashing the whole message is only worth it when a transfer is to be made.
            let key = match plan.action() {
                Action::Convert => message_key(&from, &transfer_rcpts, raw),
                Action::Pass => String::new(),
            };
            (plan, analysis, key, policy)
        })
        .await
    };
    let Ok((plan, analysis, key, policy)) = analysed else {
        // A panic in analysis must not lose the message: relay it unchanged.
        return (Plan::analysis_failed(policy), None);
    };
    if plan.action() == Action::Pass {
        return (plan, None);
    }
    let selection = plan.selection.convert.clone();
    let conversion = Conversion {
        policy,
        analysis,
        selection,
        key,
        rcpts: transfer_rcpts,
        whole_message: plan.selection.whole_message,
    };
    (plan, Some(conversion))
}

/// The rewrite step: the message with the moved parts replaced by the notice (in whole-message
/// mode: the neutral notice that replaces the whole body); `link`: the one
/// recipient's own download link (per-recipient copies, whose notice carries it — with
/// password mode `none` the link holds the password, which only that recipient's copy shows).
fn rewrite(
    message: &Spooled,
    c: &Conversion,
    converted: &Converted,
    link: Option<&str>,
) -> Result<Vec<u8>, mime::RewriteError> {
    let policy = &c.policy;
    let notice = mime::Notice {
        language: Language::from(policy.language.as_str()),
        files: converted
            .files
            .iter()
            .map(|f| mime::NoticeFile {
                name: f.name.clone(),
                size: f.size,
            })
            .collect(),
        expires: chrono::NaiveDate::parse_from_str(&converted.expiration, "%Y-%m-%d").ok(),
        sender: converted.sender_display.clone(),
        tracking_id: Some(converted.tracking_id.clone()),
        download_url: link
            .map(str::to_string)
            .or_else(|| converted.download_url.clone()),
        access: mime::Access {
            link_in_message: link.is_some(),
            ..converted.access()
        },
        template_dir: policy.template_dir.clone(),
        whole_message: c.whole_message,
        attachment_list: policy.notice_attachment,
    };
    let out = if c.whole_message {
        mime::neutral_message(message.as_bytes(), &c.analysis, &notice)?
    } else {
        mime::rewrite(message.as_bytes(), &c.analysis, &c.selection, &notice)?
    };
    // The tag asked for the conversion; it has done its job and leaves the subject.
    Ok(match policy.subject_tag.as_deref() {
        Some(tag) => mime::remove_subject_tag(&out, tag).unwrap_or(out),
        None => out,
    })
}

/// The receipt step (`sender_receipt = true`): after the converted message went to the next
/// hop, the envelope sender gets a receipt (`mime::build_receipt`) — from the null reverse
/// path to the sender, a transaction of its own at the next hop. Exactly once per transfer:
/// the state store's record of the transfer (`key`) says whether one went out, and the key
/// lock keeps a concurrent retry of the same message from sending a second. A receipt that
/// cannot be sent is logged and not retried: the message itself is delivered, and its reply
/// must not depend on the receipt.
async fn sender_receipt(
    gw: &Arc<Gateway>,
    c: &Conversion,
    key: &str,
    rcpts: &[String],
    converted: &Converted,
    sender: &str,
    message: &Spooled,
) {
    let policy = &c.policy;
    if !policy.sender_receipt || !mime::wants_receipt(sender, message.as_bytes()) {
        return;
    }
    // This process's lock and the store's lease (another node, with PostgreSQL).
    let _same_message = match gw.hold(key).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot hold the state record: no sender receipt");
            return;
        }
    };
    match gw.state.get(key).await {
        Ok(Some(Record::Finished {
            receipt_sent: false,
            ..
        })) => {}
        Ok(Some(Record::Finished { .. })) => {
            tracing::debug!(tracking_id = %converted.tracking_id, "the sender's receipt went out before");
            return;
        }
        Ok(_) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the state record: no sender receipt");
            return;
        }
    }
    let raw = message.as_bytes();
    let facts = super::facts::header_facts(raw);
    let subject = match (&facts.subject, policy.subject_tag.as_deref()) {
        (Some(s), Some(tag)) => Some(super::facts::strip_tag(s, tag)),
        (s, _) => s.clone(),
    };
    let in_reply_to = mail_parser::MessageParser::default()
        .parse_headers(raw)
        .and_then(|m| m.message_id().map(str::to_string));
    let default_from = format!("Cryptshare Gateway <postmaster@{}>", gw.hostname);
    let files: Vec<mime::ReceiptFile> = converted
        .files
        .iter()
        .map(|f| mime::ReceiptFile {
            name: f.name.clone(),
            size: f.size,
            sha256: f.sha256.clone(),
        })
        .collect();
    let receipt = mime::Receipt {
        language: Language::from(policy.language.as_str()),
        from: policy.receipt_from.as_deref().unwrap_or(&default_from),
        to: sender,
        subject: subject.as_deref(),
        in_reply_to: in_reply_to.as_deref(),
        recipients: rcpts,
        files: &files,
        tracking_id: &converted.tracking_id,
        expires: chrono::NaiveDate::parse_from_str(&converted.expiration, "%Y-%m-%d").ok(),
        access: converted.access(),
        whole_message: c.whole_message,
        hostname: &gw.hostname,
        date: chrono::Utc::now(),
    };
    let bytes = mime::build_receipt(&receipt);
    let signature = dkim_signature(gw, Decision::Convert, &bytes);
    let mut tx = gw.relay.begin();
    let mut reply = tx.mail_from(&crate::envelope::MailFrom::default()).await;
    if reply.is_positive() {
        reply = tx
            .rcpt_to(&RcptTo {
                address: sender.to_string(),
                ..RcptTo::default()
            })
            .await;
    }
    if reply.is_positive() {
        reply = tx.data(&[&signature, &bytes]).await;
    }
    if reply.is_positive() {
        if let Err(e) = gw.state.mark_receipt_sent(key).await {
            // The receipt is with the next hop; a retry may send a second one.
            tracing::error!(error = %e, "cannot record the sender's receipt");
        }
        tracing::info!(tracking_id = %converted.tracking_id, "sender receipt relayed");
    } else {
        tx.reset().await;
        tracing::warn!(
            tracking_id = %converted.tracking_id,
            reply = %reply.to_string().trim_end(),
            "the next hop did not take the sender's receipt"
        );
    }
}

/// The client of a transaction as the next hop's XFORWARD describes it. No NAME: the gateway
/// does not resolve client addresses. SOURCE=LOCAL for a client on this host (loopback, or the
/// listener's own address), as Postfix's `permit_inet_interfaces` sees local mail.
pub(super) fn client_origin(info: &ConnectionInfo) -> ClientOrigin {
    let addr = info.peer.ip().to_canonical();
    ClientOrigin {
        name: None,
        addr,
        port: info.peer.port(),
        esmtp: info.esmtp,
        helo: info.helo.clone(),
        local: addr.is_loopback() || addr == info.local.ip().to_canonical(),
    }
}

/// The relay step: hand `body` (after our `Received:` line) to the next hop, then the outcome.
///
/// Client gone = no delivery: a conversion can outlast the client's timeout, and a client that
/// gave up retries the message. So the relay asks whether the client is still connected before
/// it starts and right before the end of the message; if not, the next hop never gets the final
/// dot (or `BDAT … LAST`). The transfer stays recorded in the state store, and the retry reuses
/// it — one transfer, one delivered copy.
async fn relay(
    gw: &Gateway,
    tx: &mut RelayTransaction,
    (received, client): (&[u8], &PeerProbe),
    body: &[u8],
    report: Report,
    decision: Decision,
) -> Reply {
    let signature = dkim_signature(gw, decision, body);
    let started = Instant::now();
    let reply = tx
        .data_unless(&[&signature, received, body], &|| client.connected())
        .await;
    let elapsed = started.elapsed();
    gw.recorder
        .relayed(report, decision, reply, tx.next_hop_reply(), elapsed)
}

/// The DKIM step: the `DKIM-Signature:` header to put on top of `body` (empty when nothing is
/// signed). `[dkim] sign = "converted"` signs what the gateway rewrote — the signatures made
/// before it no longer verify — and `all` also what it relays unchanged.
///
/// Signing reads the whole message (the body hash): for a large one the worker thread hands
/// its other sessions to the rest of the runtime meanwhile (`block_in_place`). A signature that
/// cannot be made is logged and the message relayed unsigned, as when no key aligns with its
/// `From:`: an unsigned message is still deliverable, a refused one is not.
fn dkim_signature(gw: &Gateway, decision: Decision, body: &[u8]) -> Vec<u8> {
    let live = gw.live();
    let Some((signer, what)) = &live.dkim else {
        return Vec::new();
    };
    if *what == DkimSign::Converted && decision != Decision::Convert {
        return Vec::new();
    }
    let sign = || signer.sign(body);
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let signed = if multi_thread && body.len() > 256 * 1024 {
        tokio::task::block_in_place(sign)
    } else {
        sign()
    };
    match signed {
        Ok(Some(header)) => header,
        Ok(None) => {
            tracing::debug!("no [dkim] key aligns with the From: domain: relayed unsigned");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "relayed unsigned");
            Vec::new()
        }
    }
}
