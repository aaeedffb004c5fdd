//! Helpers for apps that check a token: reading a bearer token the way HTTP
//! defines it, and comparing tokens without leaking through timing how much
//! of a guess was right.

/// The token of an `Authorization` header value with the `Bearer` scheme
/// (the scheme is case-insensitive, RFC 7235 §2.1), if it has one.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `given` equals `expected`, comparing every byte whatever the first
/// difference (the time depends on the lengths only).
pub fn tokens_match(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secreT", "secret"));
        assert!(!tokens_match("secret!", "secret"));
    }
}
