//! A winmail.dat of arbitrary bytes (a single-part `application/ms-tnef` message, binary, so the
//! body is the TNEF stream as it is): the analysis never panics; when it unpacks the stream,
//! every file lies inside the decoded part, the files' names are sanitised and unique, and
//! streaming each one gives exactly its size; when it does not, the part is moved whole.
#![no_main]

use std::collections::HashSet;

use cryptshare_gateway::mime;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut raw = b"Content-Type: application/ms-tnef; name=\"winmail.dat\"\r\n\
Content-Disposition: attachment; filename=\"winmail.dat\"\r\n\
Content-Transfer-Encoding: binary\r\n\r\n"
        .to_vec();
    raw.extend_from_slice(data);
    let a = mime::analyse(&raw);
    let mut names = HashSet::new();
    for p in a.candidates() {
        let uploads = p.uploads();
        assert!(!uploads.is_empty());
        assert!(uploads.len() <= 256);
        assert_eq!(
            uploads.iter().map(|u| u.size).sum::<u64>(),
            p.transfer_size()
        );
        for u in &uploads {
            assert!(
                names.insert(u.name.to_lowercase()),
                "duplicate {:?}",
                u.name
            );
            assert!(!u.name.contains(['/', '\\']) && !u.name.chars().any(char::is_control));
            if let Some(r) = &u.within {
                assert!(r.start <= r.end && r.end <= p.size);
            }
            let (size, _) = mime::upload_sha256(&raw, p, u);
            assert_eq!(size, u.size);
        }
    }
});
