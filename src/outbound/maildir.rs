//! `relay.next_hop = "maildir:DIR"`: each message becomes one file in a maildir.
//!
//! Delivery is atomic and durable before the 250: write `DIR/tmp/NAME`, fsync, write the envelope
//! sidecar `DIR/envelope/NAME.json` the same way, rename the message to `DIR/new/NAME`, fsync the
//! directories. A reader that sees `new/NAME` can rely on the sidecar being there.
//! The file holds exactly the bytes relayed (our `Received:` header plus the message).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::envelope::{Body, MailFrom, RcptTo, Ret};

#[derive(Debug)]
pub struct Maildir {
    root: PathBuf,
    host: String,
    counter: AtomicU64,
}

/// The sidecar: the envelope as the next hop would have seen it.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    mail_from: &'a str,
    size: Option<u64>,
    body: Option<&'static str>,
    smtputf8: bool,
    ret: Option<&'static str>,
    envid: Option<&'a str>,
    rcpt_to: Vec<EnvelopeRcpt<'a>>,
    message_size: u64,
}

#[derive(Debug, Serialize)]
struct EnvelopeRcpt<'a> {
    address: &'a str,
    notify: Vec<&'static str>,
    orcpt: Option<&'a str>,
}

impl Maildir {
    /// Create `tmp`, `new`, `cur` and `envelope` below `root` if needed.
    pub fn open(root: &Path, hostname: &str) -> io::Result<Maildir> {
        for sub in ["tmp", "new", "cur", "envelope"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // Maildir names must not contain '/' or ':' (the info separator).
        let host = hostname.replace('/', "\\057").replace(':', "\\072");
        Ok(Maildir {
            root: root.to_path_buf(),
            host,
            counter: AtomicU64::new(0),
        })
    }

    /// Store one message; returns its file name in `new/`.
    pub async fn deliver(
        &self,
        from: &MailFrom,
        rcpts: &[RcptTo],
        parts: &[&[u8]],
    ) -> io::Result<String> {
        let name = self.unique_name();
        let tmp = self.root.join("tmp").join(&name);
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let result = async {
            write_synced(&tmp, parts).await?;
            let envelope = envelope_json(from, rcpts, total)?;
            let env_tmp = self.root.join("tmp").join(format!("{name}.json"));
            write_synced(&env_tmp, &[&envelope]).await?;
            tokio::fs::rename(
                &env_tmp,
                self.root.join("envelope").join(format!("{name}.json")),
            )
            .await?;
            sync_dir(&self.root.join("envelope")).await?;
            tokio::fs::rename(&tmp, self.root.join("new").join(&name)).await?;
            sync_dir(&self.root.join("new")).await?;
            io::Result::Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map(|()| name)
    }

    /// `secs.M<usec>P<pid>Q<n>R<random>.host`: unique across processes and restarts.
    fn unique_name(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let r: u64 = rand::random();
        format!(
            "{}.M{}P{}Q{}R{:016x}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            n,
            r,
            self.host
        )
    }
}

async fn write_synced(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await?;
    for p in parts {
        f.write_all(p).await?;
    }
    f.flush().await?;
    f.sync_all().await
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

fn envelope_json(from: &MailFrom, rcpts: &[RcptTo], total: u64) -> io::Result<Vec<u8>> {
    let env = Envelope {
        mail_from: &from.address,
        size: from.size,
        body: from.body.map(|b| match b {
            Body::SevenBit => "7BIT",
            Body::EightBitMime => "8BITMIME",
            Body::BinaryMime => "BINARYMIME",
        }),
        smtputf8: from.smtputf8,
        ret: from.ret.map(|r| match r {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }),
        envid: from.envid.as_deref(),
        rcpt_to: rcpts
            .iter()
            .map(|r| {
                let n = &r.notify;
                let notify = [
                    (n.never, "NEVER"),
                    (n.success, "SUCCESS"),
                    (n.failure, "FAILURE"),
                    (n.delay, "DELAY"),
                ]
                .into_iter()
                .filter_map(|(on, s)| on.then_some(s))
                .collect();
                EnvelopeRcpt {
                    address: &r.address,
                    notify,
                    orcpt: r.orcpt.as_deref(),
                }
            })
            .collect(),
        message_size: total,
    };
    let mut v = serde_json::to_vec_pretty(&env).map_err(io::Error::other)?;
    v.push(b'\n');
    Ok(v)
}
