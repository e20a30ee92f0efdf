//! Arbitrary bytes as the start of a connection from a proxy (`server.proxy_protocol`): the
//! PROXY v1/v2 header reader. Asserts that it never panics, that a header it accepts is within
//! the protocol's bounds, that it takes exactly the header's octets and nothing after them (the
//! session gets the rest), and that the same header alone parses to the same result.
#![no_main]

use cryptshare_gateway::inbound::{ProxyError, frame_proxy_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    match frame_proxy_header(input) {
        Ok((h, rest)) => {
            assert!(h.len <= input.len());
            assert!(h.len <= 1024, "header of {} octets", h.len);
            assert_eq!(rest, &input[h.len..]);
            assert!(matches!(h.version, 1 | 2));
            let (again, tail) = frame_proxy_header(&input[..h.len]).expect("header alone");
            assert_eq!(again, h);
            assert!(tail.is_empty());
        }
        Err(ProxyError::NotProxy(shown)) => {
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
        Err(_) => {}
    }
});
