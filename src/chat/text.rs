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
    fn first_word_splits_at_the_first_blank_run() {
        assert_eq!(first_word("bob  hi there"), ("bob", "hi there"));
        assert_eq!(first_word("bob\t\t x"), ("bob", "x"));
        assert_eq!(first_word("bob"), ("bob", ""));
        assert_eq!(first_word(""), ("", ""));
        assert_eq!(first_word("é  ü"), ("é", "ü"));
    }
}
