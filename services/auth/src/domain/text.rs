//! Text that is shown to people (the browser's user agent on the phone, the
//! user's name on the login page) must look like what it is. Control
//! characters (Unicode Cc) and format characters (Cf: bidi overrides and
//! isolates such as U+202E, zero-width characters, soft hyphens, tags) can
//! reorder or hide what a reader sees, so such text is refused.

/// Unicode general category Cf (format), as of Unicode 15.1.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// True for a control (Cc) or format (Cf) character.
pub fn is_hidden_or_control(c: char) -> bool {
    let code = u32::from(c);
    c.is_control()
        || FORMAT
            .iter()
            .any(|&(low, high)| (low..=high).contains(&code))
}

/// True when `text` holds no control or format character.
pub fn is_displayable(text: &str) -> bool {
    !text.chars().any(is_hidden_or_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_zero_width_and_controls_are_refused() {
        for bad in [
            "Mozilla\u{202E}gpj.exe",
            "a\u{2066}b",
            "zero\u{200B}width",
            "bom\u{FEFF}",
            "tag\u{E0041}",
            "line\nbreak",
            "nul\0",
            "del\u{7F}",
            "c1\u{85}",
        ] {
            assert!(!is_displayable(bad), "{bad:?}");
        }
        for good in [
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "Zoë Ünal",
            "山田 太郎",
            "עברית",
            "emoji 🙂",
        ] {
            assert!(is_displayable(good), "{good:?}");
        }
    }
}
