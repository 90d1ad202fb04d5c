//! Session ids: credentials, so drawn from the OS and kept out of logs.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 256 bits, as the contract asks; 43 characters once encoded.
const ID_BYTES: usize = 32;

/// A new session id: 256 bits from the operating system's secure random
/// source, URL-safe base64 without padding.
pub fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The path as it may be logged: the segment after `sessions` (a session id
/// in `/sessions/{id}`) is replaced by `{id}`, whatever follows it.
pub fn mask_path(path: &str) -> Cow<'_, str> {
    if !path.contains("sessions/") {
        return Cow::Borrowed(path);
    }
    let mut masked = String::with_capacity(path.len());
    let mut previous = "";
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            masked.push('/');
        }
        if previous == "sessions" && !segment.is_empty() {
            masked.push_str("{id}");
        } else {
            masked.push_str(segment);
        }
        previous = segment;
    }
    Cow::Owned(masked)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_43_url_safe_characters_and_unique() {
        let ids: HashSet<String> = (0..10_000).map(|_| new_session_id().unwrap()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.len(), 43, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }

    #[test]
    fn session_ids_are_masked_in_paths() {
        let cases = [
            ("/sessions/abcDEF_-123", "/sessions/{id}"),
            ("/sessions/abc/extra", "/sessions/{id}/extra"),
            ("//sessions/abc", "//sessions/{id}"),
            ("/sessions", "/sessions"),
            ("/sessions/", "/sessions/"),
            ("/users/alice/sessions", "/users/alice/sessions"),
            ("/users/alice/sessions/abc", "/users/alice/sessions/{id}"),
            ("/webhooks/stripe", "/webhooks/stripe"),
        ];
        for (path, masked) in cases {
            assert_eq!(mask_path(path), masked, "{path}");
        }
    }
}
