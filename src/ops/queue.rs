//! `cryptshare-gateway queue list|show|retry|delete|hold|release` (SPEC §3): spool mode's
//! queue for the operator. The commands work on the queue where the gateway keeps it — its
//! files ([`crate::store::queue`]) or, with `state.backend = "postgres"`, the shared queue in
//! the database ([`crate::store::pg_queue`]) — and take each message's lease, so they never
//! change a message while a running gateway delivers it; the scheduler sees a change within a
//! second.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::config::Config;
use crate::store::pg_queue::{PgQueue, QueueStore};
use crate::store::queue::{Envelope, Listed, Place, Queue, QueueError, RcptState};

/// What a command printed and its exit status: 0 done, 1 nothing to do (no such message, held,
/// busy), 2 the queue cannot be read.
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Outcome {
        Outcome {
            stdout,
            stderr: String::new(),
            code: 0,
        }
    }
    fn fail(code: u8, stderr: String) -> Outcome {
        Outcome {
            stdout: String::new(),
            stderr,
            code,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    List,
    Show,
    Retry,
    Delete,
    Hold,
    Release,
}

pub fn run(cfg: &Config, action: Action, id: Option<&str>, json: bool) -> Outcome {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Outcome::fail(2, format!("cannot start the runtime: {e}\n")),
    };
    rt.block_on(run_async(cfg, action, id, json))
}

async fn open(cfg: &Config) -> Result<QueueStore, String> {
    match cfg.state.backend {
        crate::config::StateBackend::File => Queue::open_for_tools(&cfg.state.dir)
            .map(|q| QueueStore::File(std::sync::Arc::new(q)))
            .map_err(|e| e.to_string()),
        crate::config::StateBackend::Postgres => {
            let pg = crate::store::postgres::PgStore::connect(
                &cfg.state,
                "queue-command",
                crate::store::postgres::DbMetrics::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(QueueStore::Postgres(PgQueue::new(pg, cfg)))
        }
    }
}

async fn run_async(cfg: &Config, action: Action, id: Option<&str>, json: bool) -> Outcome {
    let q = match open(cfg).await {
        Ok(q) => q,
        Err(e) => return Outcome::fail(2, format!("{e}\n")),
    };
    let r = match (action, id) {
        (Action::List, _) => list(&q, json).await,
        (_, None) => return Outcome::fail(2, "a queue id is required\n".into()),
        (Action::Show, Some(id)) => show(&q, id, json).await,
        (Action::Retry, Some(id)) => retry(&q, id).await,
        (Action::Delete, Some(id)) => delete(&q, id).await,
        (Action::Hold, Some(id)) => hold(&q, id).await,
        (Action::Release, Some(id)) => release(&q, id).await,
    };
    match r {
        Ok(o) => o,
        Err(e @ (QueueError::NotFound(_) | QueueError::Busy(_))) => {
            Outcome::fail(1, format!("{e}\n"))
        }
        Err(e) => Outcome::fail(2, format!("{e}\n")),
    }
}

fn time(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn state_name(s: RcptState) -> &'static str {
    match s {
        RcptState::Pending => "pending",
        RcptState::Delivered => "delivered",
        RcptState::Failed => "failed",
    }
}

/// One message as JSON (`queue list --json`, `queue show --json`).
fn entry_json(l: &Listed) -> Value {
    let mut v = json!({"id": l.id, "place": l.place.name(), "size": l.size});
    if let Some(e) = &l.envelope {
        v["arrival"] = json!(time(e.arrival));
        v["sender"] = json!(e.mail_from.address);
        v["attempts"] = json!(e.attempts);
        v["next_attempt"] = json!(if e.next_attempt == 0 {
            "now".to_string()
        } else {
            time(e.next_attempt)
        });
        v["reason"] = json!(e.last_error);
        v["dsn"] = json!(e.is_dsn);
        v["recipients"] = e
            .rcpts
            .iter()
            .map(|r| {
                json!({"address": r.rcpt.address, "state": state_name(r.state),
                       "last_reply": r.last_reply})
            })
            .collect();
    }
    v
}

async fn list(q: &QueueStore, json: bool) -> Result<Outcome, QueueError> {
    let all = q.list_all().await?;
    if json {
        let v: Vec<Value> = all.iter().map(entry_json).collect();
        return Ok(Outcome::ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )));
    }
    let mut out = String::new();
    for l in &all {
        match &l.envelope {
            Some(e) => {
                let pending = e.pending().count();
                let next = if l.place == Place::Hold {
                    "held".to_string()
                } else if e.next_attempt == 0 {
                    "now".to_string()
                } else {
                    time(e.next_attempt)
                };
                let sender = if e.mail_from.address.is_empty() {
                    "<>"
                } else {
                    &e.mail_from.address
                };
                let _ = writeln!(
                    out,
                    "{}  {}  {}  {} bytes  from {}  to {}/{} pending  attempts {}  next {}{}",
                    l.id,
                    l.place.name(),
                    time(e.arrival),
                    l.size,
                    crate::mime::strip_invisible(sender),
                    pending,
                    e.rcpts.len(),
                    e.attempts,
                    next,
                    e.last_error
                        .as_deref()
                        .map(|r| format!("  ({})", crate::mime::strip_invisible(r)))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{}  {}  {} bytes  (envelope unreadable)",
                    l.id,
                    l.place.name(),
                    l.size
                );
            }
        }
    }
    let _ = writeln!(out, "-- {} messages", all.len());
    Ok(Outcome::ok(out))
}

async fn show(q: &QueueStore, id: &str, json: bool) -> Result<Outcome, QueueError> {
    let place = q.find(id).await?;
    let listed = q
        .list_all()
        .await?
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
    if json {
        return Ok(Outcome::ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&entry_json(&listed)).unwrap_or_default()
        )));
    }
    let Some(e) = &listed.envelope else {
        return Ok(Outcome::ok(format!(
            "{id}: {} ({} bytes), envelope unreadable\n",
            place.name(),
            listed.size
        )));
    };
    let mut out = String::new();
    let _ = writeln!(out, "id: {id}");
    let _ = writeln!(out, "place: {}", place.name());
    let _ = writeln!(out, "arrival: {}", time(e.arrival));
    let _ = writeln!(out, "size: {}", listed.size);
    let _ = writeln!(
        out,
        "sender: <{}>",
        crate::mime::strip_invisible(&e.mail_from.address)
    );
    for r in &e.rcpts {
        let _ = writeln!(
            out,
            "recipient: <{}> {}{}",
            crate::mime::strip_invisible(&r.rcpt.address),
            state_name(r.state),
            r.last_reply
                .as_deref()
                .map(|x| format!(" ({})", crate::mime::strip_invisible(x)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "attempts: {}", e.attempts);
    let _ = writeln!(
        out,
        "next attempt: {}",
        if e.next_attempt == 0 {
            "now".into()
        } else {
            time(e.next_attempt)
        }
    );
    if e.is_dsn {
        let _ = writeln!(out, "a delivery status notification of the gateway");
    }
    Ok(Outcome::ok(out))
}

async fn update_active(
    q: &QueueStore,
    id: &str,
    f: impl FnOnce(&mut Envelope),
) -> Result<(), QueueError> {
    let lease = q.lease(Place::Active, id).await?;
    let mut env = q.envelope(Place::Active, id).await?;
    f(&mut env);
    q.update(Place::Active, lease, &env).await
}

async fn retry(q: &QueueStore, id: &str) -> Result<Outcome, QueueError> {
    match q.find(id).await? {
        Place::Active => {}
        Place::Hold => {
            return Ok(Outcome::fail(
                1,
                format!("{id} is held: `queue release {id}` to deliver it\n"),
            ));
        }
        Place::Corrupt => {
            return Ok(Outcome::fail(
                1,
                format!("{id} is quarantined (unreadable envelope); inspect or delete it\n"),
            ));
        }
    }
    update_active(q, id, |e| e.next_attempt = 0).await?;
    Ok(Outcome::ok(format!("{id}: next attempt now\n")))
}

async fn delete(q: &QueueStore, id: &str) -> Result<Outcome, QueueError> {
    let place = q.find(id).await?;
    let lease = q.lease(place, id).await?;
    q.remove(place, lease, id).await?;
    Ok(Outcome::ok(format!("{id}: deleted\n")))
}

async fn hold(q: &QueueStore, id: &str) -> Result<Outcome, QueueError> {
    match q.find(id).await? {
        Place::Active => {}
        Place::Hold => return Ok(Outcome::ok(format!("{id}: already held\n"))),
        Place::Corrupt => {
            return Ok(Outcome::fail(1, format!("{id} is quarantined\n")));
        }
    }
    let lease = q.lease(Place::Active, id).await?;
    q.move_to(Place::Active, Place::Hold, lease, id, None)
        .await?;
    Ok(Outcome::ok(format!("{id}: held\n")))
}

async fn release(q: &QueueStore, id: &str) -> Result<Outcome, QueueError> {
    if q.find(id).await? != Place::Hold {
        return Ok(Outcome::fail(1, format!("{id} is not held\n")));
    }
    let lease = q.lease(Place::Hold, id).await?;
    let mut env = q.envelope(Place::Hold, id).await?;
    env.next_attempt = 0;
    q.move_to(Place::Hold, Place::Active, lease, id, Some(&env))
        .await?;
    Ok(Outcome::ok(format!("{id}: released, next attempt now\n")))
}
