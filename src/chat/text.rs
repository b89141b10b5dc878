//! What text may be: the characters no line may carry, blanks, and the
//! form of an account name. Shared by the session and the audit trail.

/// Longest account name, in bytes (all ASCII).
pub const MAX_NAME: usize = 32;

/// The blanks the protocol trims and splits on: space and TAB.
pub fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Characters no line may carry: C0 controls but TAB, DEL, C1 controls, and
/// the bidirectional overrides and isolates.
pub fn is_forbidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}'
        | '\u{a}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// 1-32 of `A-Z a-z 0-9 _ - .`, starting with a letter or a digit.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Longest room name, without its `#`.
pub const MAX_ROOM: usize = 32;

/// A room name as typed (`#rust`, `#Rust`): its lowercase form without the
/// `#`, if it is `#` + 1-32 of `a-z 0-9 _ - .` in any case.
pub fn room_name(typed: &str) -> Option<String> {
    let name = typed.strip_prefix('#')?;
    let ok = !name.is_empty()
        && name.len() <= MAX_ROOM
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then(|| name.to_ascii_lowercase())
}

/// Unix seconds as the protocol writes times: `2026-12-01T10:38:05Z`.
pub fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Unix seconds as a sanction's end is shown: `2026-12-08T10:30Z`
/// (sanctions end on whole minutes, so nothing is lost).
pub fn utc_minute(secs: i64) -> String {
    let mut text = utc(secs);
    text.truncate(16);
    text.push('Z');
    text
}

/// When a sanction ends: [`utc_minute`], or `forever`.
pub fn until_text(until: Option<i64>) -> String {
    until.map_or_else(|| "forever".to_owned(), utc_minute)
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `text` split at its first blank run: the first word and the rest.
pub fn first_word(text: &str) -> (&str, &str) {
    match text.find(is_blank) {
        Some(i) => (&text[..i], text[i..].trim_start_matches(is_blank)),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_in_the_protocol_s_form() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_796_121_485), "2026-12-01T10:38:05Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn room_names_are_hash_and_1_to_32_of_the_alphabet_in_lowercase() {
        assert_eq!(room_name("#Rust").as_deref(), Some("rust"));
        assert_eq!(room_name("#a.b-c_9").as_deref(), Some("a.b-c_9"));
        assert_eq!(
            room_name(&format!("#{}", "x".repeat(32))).map(|n| n.len()),
            Some(32)
        );
        for bad in [
            "rust",
            "#",
            "##",
            "#a b",
            "#é",
            &format!("#{}", "x".repeat(33)),
            "#a/b",
        ] {
            assert_eq!(room_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn first_word_splits_at_the_first_blank_run() {
        assert_eq!(first_word("bob  hi there"), ("bob", "hi there"));
        assert_eq!(first_word("bob\t\t x"), ("bob", "x"));
        assert_eq!(first_word("bob"), ("bob", ""));
        assert_eq!(first_word(""), ("", ""));
        assert_eq!(first_word("é  ü"), ("é", "ü"));
    }
}
