//! Login tokens: what `/token` hands out and `T` accepts.
//!
//! A token is 24 random bytes (192 bits) from the operating system, written
//! as 32 characters of base64url without padding, so it survives a URL, a
//! shell and a config file unquoted. The server keeps only its SHA-256:
//! a stolen database logs nobody in, and checking a token is one hash and
//! one indexed read, never a bcrypt.

use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::ops::TokenHash;

/// Characters in a token.
pub const TOKEN_LEN: usize = 32;
const TOKEN_BYTES: usize = 24;

/// A new token and its hash; `None` if the system has no randomness to
/// give (the caller says the service is unavailable).
pub fn new_token() -> Option<(String, TokenHash)> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new().fill(&mut bytes).ok()?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_of(&token);
    Some((token, hash))
}

/// The hash of a typed token, if it has a token's form (length and
/// alphabet); anything else cannot be one and is refused without a read.
pub fn parse(typed: &str) -> Option<TokenHash> {
    let well_formed = typed.len() == TOKEN_LEN
        && typed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| hash_of(typed))
}

fn hash_of(token: &str) -> TokenHash {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest::digest(&digest::SHA256, token.as_bytes()).as_ref());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_url_safe_unique_and_parse_to_their_hash() {
        let (a, ha) = new_token().expect("randomness");
        let (b, hb) = new_token().expect("randomness");
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert_eq!(a.len(), TOKEN_LEN);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(parse(&a), Some(ha));
    }

    #[test]
    fn anything_not_of_a_token_s_form_is_refused() {
        let (a, _) = new_token().expect("randomness");
        for bad in [
            String::new(),
            a[..31].to_owned(),
            format!("{a}x"),
            format!("{}+", &a[..31]),
            format!("{}/", &a[..31]),
            format!("{}=", &a[..31]),
            format!("{}é", &a[..30]),
            format!("{} ", &a[..31]),
        ] {
            assert_eq!(parse(&bad), None, "{bad:?}");
        }
    }
}
