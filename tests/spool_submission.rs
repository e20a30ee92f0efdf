//! Issue 13: a mail client on a spool listener. Python's `smtplib` over STARTTLS with AUTH,
//! from outside `client_networks`, submits a message with a 100 MB attachment: it gets
//! `250 2.0.0 queued as ID` before anything reaches the next hop (Postfix's `smtp-sink`), and
//! the converted message (the attachment replaced by the notice) arrives there later.

mod e2e_support;
mod support;

use e2e_support::*;

const SCRIPT: &str = r#"
import smtplib, ssl, sys, time, os
from email.message import EmailMessage
port = int(sys.argv[1])
m = EmailMessage()
m['From'] = 'Alice <alice@example.org>'
m['To'] = 'bob@example.net'
m['Subject'] = 'spool submission'
m['Message-ID'] = '<spool-submission@example.org>'
m.set_content('the report is attached')
m.add_attachment(os.urandom(100 * 1024 * 1024), maintype='application', subtype='octet-stream', filename='big.bin')
raw = m.as_bytes().replace(b'\r\n', b'\n').replace(b'\n', b'\r\n')
s = smtplib.SMTP('127.0.0.1', port, timeout=600)
s.ehlo('mua.test')
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s.starttls(context=ctx)
s.ehlo('mua.test')
s.login('alice', 'alice secret')
s.mail('alice@example.org')
s.rcpt('bob@example.net')
start = time.monotonic()
code, text = s.data(raw)
elapsed = time.monotonic() - start
s.quit()
print(code, text.decode())
print('elapsed %.1f s after the end of the data was sent' % elapsed, file=sys.stderr)
"#;

#[test]
fn smtplib_starttls_auth_100_mb_is_queued_then_converted() {
    let sink = SmtpSink::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = write_cert(dir.path());
    let hash = bcrypt::hash("alice secret", 4).expect("bcrypt");
    let users = dir.path().join("users");
    std::fs::write(&users, format!("alice:{hash}\n")).expect("users");
    let tail = format!(
        "{}[server.auth]\nusers_file = \"{}\"\n\
         [queue]\nmode = \"spool\"\nmin_free_space = 0\n\
         [[policy]]\nname = \"org\"\nsenders = [\"*@example.org\"]\nthreshold = 1048576\n",
        tls_section(&cert, &key),
        users.display()
    );
    let gw = Gateway::start_in(
        dir,
        "client_networks = [\"192.0.2.0/24\"]\nmax_message_size = 209715200",
        &sink.next_hop(),
        &tail,
    );
    let out = support::process::python(
        SCRIPT,
        &[&gw.port.to_string()],
        b"",
        "the smtplib submission test",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}");
    let id = stdout
        .strip_prefix("250 2.0.0 queued as ")
        .unwrap_or_else(|| panic!("{stdout}"))
        .trim()
        .to_string();
    // Then it arrives converted: the notice instead of 100 MB.
    let dump = sink.wait_dump("Subject: spool submission");
    let text = String::from_utf8_lossy(&dump.message);
    assert!(
        text.contains(&format!(" id {id}")),
        "{}",
        &text[..text.len().min(2000)]
    );
    assert!(
        text.contains("big.bin"),
        "{}",
        &text[..text.len().min(4000)]
    );
    assert!(
        dump.message.len() < 1024 * 1024,
        "not converted: {} bytes",
        dump.message.len()
    );
    // In the gateway's own log the message was queued (and so answered) before the attempt
    // that delivered it.
    let log = gw.log();
    let queued = log.find(&format!("queue_id={id}")).expect("queued line");
    let removed = log.find("removed from the queue").expect("removal line");
    assert!(queued < removed, "{log}");
}
