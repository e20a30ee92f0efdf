//! The next-hop readiness probe: a short, complete SMTP conversation (greeting, `EHLO`, `QUIT`).
//!
//! A bare TCP connect that is closed at once costs a Postfix next hop three log lines (`connect
//! from`, `lost connection after CONNECT`, `disconnect … commands=0/0`) and tells little: a
//! server that accepts connections but answers `421`/`554` or nothing at all looks "up". A
//! greeting and an EHLO answered with 2xx mean the next hop takes mail; Postfix logs two lines
//! (`connect from`, `disconnect from … ehlo=1 quit=1 commands=2`).
//!
//! Self-contained on purpose (no SMTP client of the relay, no TLS, no pool): `ops` depends on no
//! protocol module, and a probe must never take a pooled connection away from real mail. Every
//! read is bounded in size and the whole conversation in time.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Longest reply line read (RFC 5321 §4.5.3.1.5: 512 octets; generous for odd servers).
const MAX_LINE: usize = 1000;
/// Most lines of one multi-line reply.
const MAX_LINES: usize = 100;
/// Longest reply text quoted in an error.
const MAX_QUOTE: usize = 200;

/// Connect to `host:port`, read the greeting (2xx), send `EHLO helo` (2xx), then `QUIT` (its
/// `221` is read but not required). `timeout` bounds the whole conversation. The error is one
/// line starting with `host:port: ` and says at which step and why.
pub async fn smtp_probe(
    host: &str,
    port: u16,
    helo: &str,
    timeout: Duration,
) -> Result<(), String> {
    let hp = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let deadline = Instant::now() + timeout;
    let secs = timeout.as_secs_f64();
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("{hp}: {e}")),
        Err(_) => return Err(format!("{hp}: connect timed out after {secs} s")),
    };
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);

    let step = |what: &str, res: Result<Result<Reply, String>, _>| match res {
        Ok(Ok(reply)) if reply.code / 100 == 2 => Ok(reply),
        Ok(Ok(reply)) => Err(format!("{hp}: {what}: {}", reply.text)),
        Ok(Err(e)) => Err(format!("{hp}: {what}: {e}")),
        Err(_) => Err(format!("{hp}: {what}: no reply within {secs} s")),
    };
    step(
        "greeting",
        tokio::time::timeout_at(deadline, read_reply(&mut r)).await,
    )?;
    let ehlo = async {
        w.write_all(format!("EHLO {helo}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        read_reply(&mut r).await
    };
    step("EHLO", tokio::time::timeout_at(deadline, ehlo).await)?;
    // Polite end: the server logs `quit=1` instead of a lost connection. Its answer does not
    // change the verdict.
    let quit = async {
        w.write_all(b"QUIT\r\n").await.map_err(|e| e.to_string())?;
        read_reply(&mut r).await
    };
    let _ = tokio::time::timeout_at(deadline, quit).await;
    Ok(())
}

struct Reply {
    code: u16,
    /// The reply as one line: its lines joined with a space, control characters removed,
    /// bounded for quoting.
    text: String,
}

/// One (multi-line) SMTP reply. Errors: EOF, an I/O error, a line that is not `NNN[ -]…`.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, String> {
    let mut text = String::new();
    for _ in 0..MAX_LINES {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let shown: String = String::from_utf8_lossy(&line)
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let code = line
            .get(..3)
            .filter(|c| c.iter().all(u8::is_ascii_digit))
            .and_then(|c| std::str::from_utf8(c).ok()?.parse::<u16>().ok());
        let sep = line.get(3).copied();
        let (Some(code), true) = (code, matches!(sep, Some(b' ' | b'-' | b'\r' | b'\n'))) else {
            return Err(format!("not an SMTP reply: {:?}", quote(&shown)));
        };
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&shown);
        if sep != Some(b'-') {
            return Ok(Reply {
                code,
                text: quote(&text),
            });
        }
    }
    Err(format!("reply longer than {MAX_LINES} lines"))
}

fn quote(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_QUOTE {
        s.to_string()
    } else {
        let mut q: String = s.chars().take(MAX_QUOTE).collect();
        q.push('…');
        q
    }
}
