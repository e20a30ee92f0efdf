//! Arbitrary bytes into the inbound SMTP session, delivered in reads whose size the input
//! chooses. Checks that nothing panics and that the session always ends (EOF closes it).
#![no_main]

mod feed;

use feed::Feed;

use std::sync::Arc;

use cryptshare_gateway::envelope::{Extensions, MailFrom, RcptTo};
use cryptshare_gateway::inbound::{
    self, ConnectionInfo, ConnectionMeta, Handler, SessionSettings, ShutdownSignal, Transaction,
};
use cryptshare_gateway::replies::{self, Reply};
use libfuzzer_sys::fuzz_target;

/// Accepts everything; refuses recipients starting with `x` to exercise both paths.
struct Sink;

impl Handler for Sink {
    async fn extensions(&mut self) -> Extensions {
        Extensions {
            binarymime: true,
            ..Extensions::default()
        }
    }
    async fn mail_from(&mut self, _: &ConnectionInfo, _: &MailFrom) -> Reply {
        replies::sender_ok()
    }
    async fn rcpt_to(&mut self, _: &ConnectionInfo, r: &RcptTo) -> Reply {
        if r.address.starts_with('x') {
            replies::relay_denied()
        } else {
            replies::recipient_ok()
        }
    }
    async fn data(&mut self, _: &ConnectionInfo, tx: Transaction) -> Reply {
        assert!(tx.message.len() as u64 <= 4096);
        replies::ok()
    }
    async fn reset(&mut self) {}
}

const PREAMBLE: &[u8] = b"EHLO f\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut input = Vec::with_capacity(rest.len() + PREAMBLE.len());
    if ctl & 1 == 1 {
        input.extend_from_slice(PREAMBLE);
    }
    input.extend_from_slice(rest);
    let chunk = usize::from(ctl >> 1) + 1;
    let mut settings = SessionSettings::new("fuzz.test", std::env::temp_dir().join("csgw-fuzz"));
    settings.max_message_size = 4096;
    settings.spool_memory_limit = 8192;
    settings.max_recipients = 3;
    settings.max_received_headers = 2;
    settings.max_errors = 10_000;
    let meta = ConnectionMeta {
        peer: "127.0.0.1:1".parse().unwrap(),
        local: "127.0.0.1:25".parse().unwrap(),
        tls: false,
        probe: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(inbound::serve(
        Feed {
            input,
            pos: 0,
            chunk,
            wait_for_354: false,
        },
        meta,
        Sink,
        Arc::new(settings),
        ShutdownSignal::never(),
    ));
});
