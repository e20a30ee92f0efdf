//! Untrusted text that the gateway shows or sends on (file names, sender names, subjects):
//! invisible Unicode format characters are removed.
//!
//! A file name `invoice\u{202E}fdp.exe` displays as `invoiceexe.pdf` (U+202E RIGHT-TO-LEFT
//! OVERRIDE), zero-width characters hide a different name inside a familiar one, and a soft
//! hyphen or a BOM makes two names that look the same compare different. None of them belongs in
//! a name a person reads to decide whether to open a file, so they go everywhere a name is shown
//! (the notice, the Cryptshare `fileName`, audit and logs). Control characters (Cc) are the
//! callers' business: each replaces them in its own way (`_` in file names, a space in text).

/// Whether `c` is an invisible format character: Unicode general category Cf (bidi embeddings,
/// overrides and isolates, zero-width space/joiners, word joiner, BOM, soft hyphen, interlinear
/// annotation, tag characters, …) plus the invisible fillers and separators that renderers show
/// as nothing (U+034F, U+115F/U+1160, U+3164, U+FFA0, U+2028/U+2029).
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x0600..=0x0605 | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0000..=0xE0FFF)
}

/// `s` without its invisible format characters (see [`is_invisible`]).
pub fn strip_invisible(s: &str) -> String {
    s.chars().filter(|&c| !is_invisible(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_and_zero_width_are_removed() {
        assert_eq!(strip_invisible("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(
            strip_invisible(
                "a\u{200B}b\u{200C}c\u{200D}d\u{2060}e\u{FEFF}f\u{00AD}g\u{2066}h\u{2069}"
            ),
            "abcdefgh"
        );
        assert_eq!(strip_invisible("Grüße €, 日本語 ✓"), "Grüße €, 日本語 ✓");
        assert_eq!(strip_invisible("tag\u{E0041}\u{E007F}"), "tag");
    }
}
