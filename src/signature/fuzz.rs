//! Property tests of the `Stripe-Signature` parser and of verification, over
//! arbitrary bytes and over headers built from the scheme's own pieces: no
//! panic, no allocation beyond the order of the header's size, and the same
//! answer as a straightforward reference written apart from the parser.
//!
//! `FUZZ_CASES` sets the cases per property (default 256, for the suite);
//! `FUZZ_CASES=200000 cargo test --release --lib fuzz` runs a long campaign
//! (generating inputs is slow in debug builds).

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;
use crate::test_alloc::peak_during;

pub(crate) fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256);
    Config {
        cases,
        // No regression files written into the source tree.
        failure_persistence: None,
        ..Config::default()
    }
}

/// What the parser is meant to answer, written the plain way: bytes as
/// characters, items trimmed of spaces and tabs, the first `t`, every `v1`.
fn reference(header: Option<&[u8]>) -> Result<(i64, String, Vec<[u8; 32]>), SignatureError> {
    let bytes = header.ok_or(SignatureError::MissingHeader)?;
    if bytes.iter().any(|&b| b >= 0x80) {
        return Err(SignatureError::NotAscii);
    }
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let blank = |c: char| c == ' ' || c == '\t';
    let items: Vec<(&str, &str)> = text
        .split(',')
        .filter_map(|item| {
            let item = item.trim_start_matches(blank).trim_end_matches(blank);
            let at = item.find('=')?;
            Some((&item[..at], &item[at + 1..]))
        })
        .collect();

    let (_, t) = items
        .iter()
        .find(|(key, _)| *key == "t")
        .ok_or(SignatureError::MissingTimestamp)?;
    if t.is_empty() || !t.chars().all(|c| c.is_ascii_digit()) {
        return Err(SignatureError::InvalidTimestamp);
    }
    let significant = t.trim_start_matches('0');
    if significant.len() > 19 {
        return Err(SignatureError::InvalidTimestamp);
    }
    let value: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().unwrap()
    };
    let timestamp = i64::try_from(value).map_err(|_| SignatureError::InvalidTimestamp)?;

    let v1: Vec<&str> = items
        .iter()
        .filter(|(key, _)| *key == "v1")
        .map(|(_, value)| *value)
        .collect();
    if v1.is_empty() {
        return Err(SignatureError::MissingV1);
    }
    let decoded: Vec<[u8; 32]> = v1
        .iter()
        .filter(|value| value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|value| {
            let digits: Vec<u8> = value
                .chars()
                .map(|c| c.to_digit(16).unwrap() as u8)
                .collect();
            std::array::from_fn(|i| digits[2 * i] << 4 | digits[2 * i + 1])
        })
        .collect();
    if decoded.is_empty() {
        return Err(SignatureError::MalformedV1);
    }
    Ok((timestamp, t.to_string(), decoded))
}

/// Headers made of the scheme's pieces, right and nearly right.
fn plausible_header() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        Just("t"),
        Just("v1"),
        Just("v0"),
        Just("T"),
        Just("V1"),
        Just("v1 "),
        Just(" t"),
        Just(""),
        Just("x"),
    ];
    let hex64 = proptest::collection::vec(
        prop_oneof![
            proptest::char::range('0', '9'),
            proptest::char::range('a', 'f'),
            proptest::char::range('A', 'F')
        ],
        62..67,
    )
    .prop_map(|digits| digits.into_iter().collect::<String>());
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        proptest::collection::vec(proptest::char::range('0', '9'), 0..25)
            .prop_map(|digits| digits.into_iter().collect::<String>()),
        hex64,
        proptest::collection::vec(any::<char>(), 0..6)
            .prop_map(|chars| chars.into_iter().collect::<String>()),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    let blank = prop_oneof![Just(""), Just(" "), Just("\t"), Just("  \t")];
    let item = (
        blank.clone(),
        key,
        prop_oneof![Just("="), Just(""), Just("==")],
        value,
        blank,
    )
        .prop_map(|(before, key, equals, value, after)| {
            format!("{before}{key}{equals}{value}{after}")
        });
    proptest::collection::vec(item, 0..8).prop_map(|items| items.join(",").into_bytes())
}

fn parsed(header: Option<&[u8]>) -> Result<(i64, String, Vec<[u8; 32]>), SignatureError> {
    parse_header(header).map(|header| {
        (
            header.timestamp,
            header.timestamp_text.to_owned(),
            header.v1,
        )
    })
}

fn agrees_with_the_reference(header: Option<&[u8]>) -> Result<(), TestCaseError> {
    let (answer, held) = peak_during(|| parsed(header));
    prop_assert_eq!(&answer, &reference(header));
    let size = header.map_or(0, <[u8]>::len);
    // The v1 list (32 bytes for every 67 or more of the header), doubled by
    // the vector's growth, and its first allocation.
    prop_assert!(
        held <= size + 256,
        "{held} bytes held for a {size}-byte header"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_parse_as_the_reference_says(header in proptest::collection::vec(any::<u8>(), 0..300)) {
        agrees_with_the_reference(Some(&header))?;
    }

    #[test]
    fn plausible_headers_parse_as_the_reference_says(header in plausible_header()) {
        agrees_with_the_reference(Some(&header))?;
    }

    #[test]
    fn verification_never_panics_and_only_a_signed_body_passes(
        header in plausible_header(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        now in any::<i64>(),
    ) {
        let verifier = Verifier::new(&[SecretString::from("whsec_fuzz")], std::time::Duration::from_secs(300));
        let text = String::from_utf8_lossy(&header).into_owned();
        // Random headers carry no valid signature (the odds are 2^-256).
        prop_assert!(verifier.verify(Some(&text), &body, now).is_err());
    }

    #[test]
    fn what_sign_writes_verifies_and_any_change_of_body_does_not(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        timestamp in 0i64..4_000_000_000,
        flip in any::<(usize, u8)>(),
    ) {
        let verifier = Verifier::new(&[SecretString::from("whsec_fuzz")], std::time::Duration::from_secs(300));
        let header = sign("whsec_fuzz", timestamp, &body);
        prop_assert_eq!(verifier.verify(Some(&header), &body, timestamp), Ok(timestamp));
        if !body.is_empty() && flip.1 != 0 {
            let mut changed = body.clone();
            changed[flip.0 % body.len()] ^= flip.1;
            prop_assert_eq!(verifier.verify(Some(&header), &changed, timestamp), Err(SignatureError::Mismatch));
        }
    }
}
