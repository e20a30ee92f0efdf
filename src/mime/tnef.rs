//! Just enough TNEF (winmail.dat) to list the files inside it, so an operator can see what an
//! Outlook "rich text" attachment carries.

const SIGNATURE: u32 = 0x223E_9F78;
const LVL_ATTACHMENT: u8 = 0x02;
/// `attAttachTitle`: the (8.3 or short) file name, a NUL-terminated string.
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// File names stored in a TNEF stream; empty when it is not TNEF or is damaged.
pub(crate) fn file_names(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    if u32_at(data, 0) != Some(SIGNATURE) {
        return out;
    }
    let mut pos = 6; // signature + legacy key
    while pos < data.len() && out.len() < 1000 {
        let Some(&level) = data.get(pos) else { break };
        let (Some(id), Some(len)) = (u32_at(data, pos + 1), u32_at(data, pos + 5)) else {
            break;
        };
        let start = pos + 9;
        let Some(end) = start.checked_add(len as usize) else {
            break;
        };
        let Some(value) = data.get(start..end) else {
            break;
        };
        if level == LVL_ATTACHMENT && id == ATT_ATTACH_TITLE {
            let value = value.split(|&c| c == 0).next().unwrap_or_default();
            out.push(String::from_utf8_lossy(value).into_owned());
        }
        pos = end + 2; // checksum
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(level: u8, id: u32, data: &[u8]) -> Vec<u8> {
        let mut v = vec![level];
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v.extend_from_slice(&[0, 0]);
        v
    }

    #[test]
    fn lists_titles_and_survives_truncation() {
        let mut d = SIGNATURE.to_le_bytes().to_vec();
        d.extend_from_slice(&[1, 0]);
        d.extend(attr(1, 0x0001_8004, b"subject\0"));
        d.extend(attr(2, ATT_ATTACH_TITLE, b"REPORT.PDF\0"));
        d.extend(attr(2, 0x0006_800F, b"%PDF"));
        d.extend(attr(2, ATT_ATTACH_TITLE, b"a.txt\0"));
        assert_eq!(file_names(&d), ["REPORT.PDF", "a.txt"]);
        for cut in 0..d.len() {
            let _ = file_names(&d[..cut]);
        }
        assert!(file_names(b"not tnef").is_empty());
    }
}
