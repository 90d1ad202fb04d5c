//! The edit made to one session's `session_data` text.
//!
//! The two keys we own are set; every other key keeps its place and its exact
//! text (numbers are not re-rendered, nested objects are not re-ordered), so
//! the web app reads back what it wrote.

use indexmap::IndexMap;
use serde_json::value::RawValue;

/// Why a session's data was left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("session_data is not valid JSON")]
    NotJson,
    #[error("session_data is JSON but not an object")]
    NotAnObject,
}

/// Returns `data` with `"subscribed"` and `"subscription_status"` set. A
/// `NULL` column (`None`) counts as `{}`.
pub fn with_subscription(
    data: Option<&str>,
    subscribed: bool,
    status: &str,
) -> Result<String, Unusable> {
    let data = data.unwrap_or("{}");
    let mut object: IndexMap<String, Box<RawValue>> = match serde_json::from_str(data) {
        Ok(object) => object,
        Err(_) => {
            return Err(if serde_json::from_str::<&RawValue>(data).is_ok() {
                Unusable::NotAnObject
            } else {
                Unusable::NotJson
            });
        }
    };
    object.insert("subscribed".to_owned(), raw(&subscribed));
    object.insert("subscription_status".to_owned(), raw(&status));
    Ok(serde_json::to_string(&object).expect("a map of strings to JSON serialises"))
}

fn raw(value: &impl serde::Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("bool and str serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_our_keys_and_keeps_every_other_as_written() {
        let data = r#"{"user_id": 7, "cart": {"z": 1, "a": [1.50, 1e3]}, "big": 123456789012345678901234567890, "subscribed": false}"#;
        let updated = with_subscription(Some(data), true, "active").unwrap();
        assert_eq!(
            updated,
            r#"{"user_id":7,"cart":{"z": 1, "a": [1.50, 1e3]},"big":123456789012345678901234567890,"subscribed":true,"subscription_status":"active"}"#
        );
    }

    #[test]
    fn null_counts_as_an_empty_object() {
        assert_eq!(
            with_subscription(None, false, "canceled").unwrap(),
            r#"{"subscribed":false,"subscription_status":"canceled"}"#
        );
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        assert_eq!(
            with_subscription(Some("{broken"), true, "active"),
            Err(Unusable::NotJson)
        );
        assert_eq!(
            with_subscription(Some(""), true, "active"),
            Err(Unusable::NotJson)
        );
        assert_eq!(
            with_subscription(Some("[1,2]"), true, "active"),
            Err(Unusable::NotAnObject)
        );
        assert_eq!(
            with_subscription(Some("\"text\""), true, "active"),
            Err(Unusable::NotAnObject)
        );
        assert_eq!(
            with_subscription(Some("null"), true, "active"),
            Err(Unusable::NotAnObject)
        );
    }

    #[test]
    fn escapes_the_status_text() {
        let updated = with_subscription(Some("{}"), false, "odd\"status").unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&updated).unwrap();
        assert_eq!(parsed["subscription_status"], "odd\"status");
    }
}
