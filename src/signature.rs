//! Stripe's webhook signature scheme, checked on the raw body before anything
//! reads it.
//!
//! Header: `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=...]`. The signed
//! payload is `"<t>.<body>"`, HMAC-SHA256 keyed with the whole `whsec_...`
//! string. We verify ourselves rather than with async-stripe because the
//! contract needs several secrets (rotation) and a configurable tolerance.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a request's signature was refused. None of the messages carry the
/// expected signature or a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("Stripe-Signature header is not ASCII")]
    NotAscii,
    #[error("Stripe-Signature header has no timestamp (t=)")]
    MissingTimestamp,
    #[error("Stripe-Signature header has a timestamp that is not a number")]
    InvalidTimestamp,
    #[error("Stripe-Signature header has no v1 signature")]
    MissingV1,
    #[error("Stripe-Signature header has no v1 signature of 64 hex digits")]
    MalformedV1,
    #[error("timestamp outside the tolerance window")]
    Stale,
    #[error("no v1 signature matches")]
    Mismatch,
}

impl SignatureError {
    /// A short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::NotAscii => "not_ascii",
            Self::MissingTimestamp => "missing_timestamp",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::MissingV1 => "missing_v1",
            Self::MalformedV1 => "malformed_v1",
            Self::Stale => "stale",
            Self::Mismatch => "mismatch",
        }
    }
}

/// The parts of a `Stripe-Signature` header that we use: what can be known
/// before the body is read, so that a request without a plausible header is
/// refused without reading its body.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    timestamp: i64,
    /// As written in the header: that text is what was signed.
    timestamp_text: &'a str,
    /// Decoded `v1` values of 64 hex digits; others can never match.
    v1: Vec<[u8; 32]>,
}

impl SignatureHeader<'_> {
    /// The signed timestamp, unix seconds.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

/// Reads a header's raw bytes, `None` when absent: comma-separated
/// `key=value` items (spaces and tabs around an item ignored), the first
/// `t=` of decimal digits, at least one `v1=` of 64 hex digits. Other keys
/// (`v0`, schemes we do not know) are ignored, as Stripe's libraries do.
pub fn parse_header(header: Option<&[u8]>) -> Result<SignatureHeader<'_>, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    // A header value may hold obs-text (bytes >= 0x80); no Stripe header does.
    let header = std::str::from_utf8(header)
        .ok()
        .filter(|text| text.is_ascii())
        .ok_or(SignatureError::NotAscii)?;
    let mut timestamp = None;
    let mut saw_v1 = false;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim_matches([' ', '\t']).split_once('=') else {
            continue;
        };
        match key {
            "t" if timestamp.is_none() => {
                let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                let seconds = value
                    .parse::<i64>()
                    .ok()
                    .filter(|_| digits)
                    .ok_or(SignatureError::InvalidTimestamp)?;
                timestamp = Some((seconds, value));
            }
            "v1" => {
                saw_v1 = true;
                let mut bytes = [0u8; 32];
                if hex::decode_to_slice(value, &mut bytes).is_ok() {
                    v1.push(bytes);
                }
            }
            _ => {}
        }
    }
    let (timestamp, timestamp_text) = timestamp.ok_or(SignatureError::MissingTimestamp)?;
    match (saw_v1, v1.is_empty()) {
        (false, _) => Err(SignatureError::MissingV1),
        (true, true) => Err(SignatureError::MalformedV1),
        (true, false) => Ok(SignatureHeader {
            timestamp,
            timestamp_text,
            v1,
        }),
    }
}

/// Checks `Stripe-Signature` headers against the configured secrets.
///
/// The HMAC key schedule is computed once per secret here, not per request.
#[derive(Clone)]
pub struct Verifier {
    keyed: Vec<HmacSha256>,
    tolerance_secs: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.keyed.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl Verifier {
    pub fn new(secrets: &[SecretString], tolerance: std::time::Duration) -> Self {
        Self {
            keyed: secrets
                .iter()
                .map(|secret| keyed_mac(secret.expose_secret()))
                .collect(),
            tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Verifies `body` against the header at time `now` (unix seconds) and
    /// returns the signed timestamp.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<i64, SignatureError> {
        self.verify_parsed(&parse_header(header.map(str::as_bytes))?, body, now)
    }

    /// [`Verifier::verify`] for a header already read by [`parse_header`].
    pub fn verify_parsed(
        &self,
        header: &SignatureHeader<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<i64, SignatureError> {
        let matched = self.keyed.iter().any(|keyed| {
            let expected = digest(keyed.clone(), header.timestamp_text, body);
            // Every candidate is compared in full so the time taken does not
            // depend on which one matched.
            header
                .v1
                .iter()
                .fold(subtle::Choice::from(0), |any, candidate| {
                    any | candidate.ct_eq(&expected)
                })
                .into()
        });
        if !matched {
            return Err(SignatureError::Mismatch);
        }
        self.check_fresh(header, now)?;
        Ok(header.timestamp)
    }

    /// Is the header's timestamp within the tolerance of `now`? Needs no
    /// body, so the webhook asks it before reading one: a stale or future
    /// timestamp can never verify, and its upload must cost no memory.
    pub fn check_fresh(
        &self,
        header: &SignatureHeader<'_>,
        now: i64,
    ) -> Result<(), SignatureError> {
        if now.abs_diff(header.timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        Ok(())
    }
}

fn keyed_mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

fn digest(mut mac: HmacSha256, timestamp: &str, body: &[u8]) -> [u8; 32] {
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The value of a valid `Stripe-Signature` header for `body` at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let signature = digest(keyed_mac(secret), &timestamp.to_string(), body);
    format!("t={timestamp},v1={}", hex::encode(signature))
}

#[cfg(test)]
pub(crate) mod fuzz;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // Computed outside this code with:
    //   printf '%s' '1700000000.{"id":"evt_1","object":"event"}' \
    //     | openssl dgst -sha256 -hmac 'whsec_test_secret'
    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const T: i64 = 1_700_000_000;
    const EXPECTED: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

    fn verifier(secrets: &[&str]) -> Verifier {
        let secrets: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(*s)).collect();
        Verifier::new(&secrets, Duration::from_secs(300))
    }

    #[test]
    fn sign_matches_an_independent_hmac() {
        assert_eq!(sign(SECRET, T, BODY), format!("t={T},v1={EXPECTED}"));
    }

    #[test]
    fn accepts_the_matching_signature_among_others() {
        let other = "0".repeat(64);
        let header = format!("t={T},v1={other},v0=abc,v1={EXPECTED},x=1");
        assert_eq!(verifier(&[SECRET]).verify(Some(&header), BODY, T), Ok(T));
    }

    #[test]
    fn any_configured_secret_may_match() {
        let header = format!("t={T},v1={EXPECTED}");
        let rotating = verifier(&["whsec_new", SECRET]);
        assert_eq!(rotating.verify(Some(&header), BODY, T + 10), Ok(T));
    }

    #[test]
    fn tolerance_applies_both_ways() {
        let header = format!("t={T},v1={EXPECTED}");
        let v = verifier(&[SECRET]);
        assert_eq!(v.verify(Some(&header), BODY, T + 300), Ok(T));
        assert_eq!(v.verify(Some(&header), BODY, T - 300), Ok(T));
        assert_eq!(
            v.verify(Some(&header), BODY, T + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v.verify(Some(&header), BODY, T - 301),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn freshness_is_known_from_the_header_alone() {
        let header = format!("t={T},v1={}", "0".repeat(64));
        let parsed = parse_header(Some(header.as_bytes())).unwrap();
        let v = verifier(&[SECRET]);
        assert_eq!(v.check_fresh(&parsed, T + 300), Ok(()));
        assert_eq!(v.check_fresh(&parsed, T - 300), Ok(()));
        assert_eq!(v.check_fresh(&parsed, T + 301), Err(SignatureError::Stale));
        assert_eq!(v.check_fresh(&parsed, T - 301), Err(SignatureError::Stale));
    }

    #[test]
    fn a_changed_body_or_secret_fails() {
        let header = format!("t={T},v1={EXPECTED}");
        let tampered = br#"{"id":"evt_2","object":"event"}"#;
        assert_eq!(
            verifier(&[SECRET]).verify(Some(&header), tampered, T),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verifier(&["whsec_other"]).verify(Some(&header), BODY, T),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_timestamp_is_verified_as_written() {
        // Signed over "01700000000.<body>": the header's text, not the number.
        let padded = format!("t=0{T},v1={EXPECTED}");
        assert_eq!(
            verifier(&[SECRET]).verify(Some(&padded), BODY, T),
            Err(SignatureError::Mismatch)
        );
        let signature = sign(SECRET, T, BODY);
        let spaced = signature.replace(',', ", ");
        assert_eq!(verifier(&[SECRET]).verify(Some(&spaced), BODY, T), Ok(T));
    }

    #[test]
    fn v0_alone_is_not_enough() {
        let header = format!("t={T},v0={EXPECTED}");
        assert_eq!(
            verifier(&[SECRET]).verify(Some(&header), BODY, T),
            Err(SignatureError::MissingV1)
        );
    }

    #[test]
    fn malformed_headers_say_what_is_wrong() {
        let v = verifier(&[SECRET]);
        assert_eq!(v.verify(None, BODY, T), Err(SignatureError::MissingHeader));
        assert_eq!(
            v.verify(Some(&format!("v1={EXPECTED}")), BODY, T),
            Err(SignatureError::MissingTimestamp)
        );
        assert_eq!(
            v.verify(Some(&format!("t=soon,v1={EXPECTED}")), BODY, T),
            Err(SignatureError::InvalidTimestamp)
        );
        assert_eq!(
            v.verify(Some(&format!("t={T}")), BODY, T),
            Err(SignatureError::MissingV1)
        );
        assert_eq!(
            v.verify(Some(&format!("t={T},v1=nothex")), BODY, T),
            Err(SignatureError::MalformedV1)
        );
        assert_eq!(
            v.verify(Some(&format!("t=-{T},v1={EXPECTED}")), BODY, T),
            Err(SignatureError::InvalidTimestamp)
        );
        assert_eq!(
            parse_header(Some(format!("t={T},v1={EXPECTED},x=\u{e9}").as_bytes())),
            Err(SignatureError::NotAscii)
        );
        assert_eq!(
            v.verify(Some(""), BODY, T),
            Err(SignatureError::MissingTimestamp)
        );
    }
}
