//! A session's `data` as the JSON text it was written in: an object's
//! members in order, each value's text kept byte for byte (numbers such as
//! `1.10` or `1e+16`, escapes such as `"\ud800"`), and RFC 7396 JSON Merge
//! Patch applied on that text, not on a parsed value that would rewrite it.
//!
//! Only keys are re-encoded (serde_json de-escapes them): a key written with
//! an escape (`"caf\u00e9"`) comes back as the character itself.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The keys the worker writes and owns; the app may not set them.
pub const RESERVED_KEYS: [&str; 3] = ["subscribed", "subscription_status", "subscription"];

/// The members of a JSON object, in the order written.
#[derive(Debug, Default)]
pub struct Members(Vec<(String, Box<RawValue>)>);

/// The text is not a JSON object (or not JSON at all).
#[derive(Debug, PartialEq, Eq)]
pub struct NotAnObject;

impl Members {
    /// Parses `text` as a JSON object, keeping each value's text.
    pub fn parse(text: &str) -> Result<Self, NotAnObject> {
        serde_json::from_str(text).map_err(|_| NotAnObject)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first reserved key among the members, if any.
    pub fn reserved_key(&self) -> Option<&str> {
        self.0
            .iter()
            .map(|(key, _)| key.as_str())
            .find(|key| RESERVED_KEYS.contains(key))
    }

    /// The members without the braces: `"a":1,"b":[2]`.
    pub fn inner_text(&self) -> String {
        let mut text = String::new();
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&serde_json::to_string(key).expect("a string serialises"));
            text.push(':');
            text.push_str(value.get());
        }
        text
    }

    /// The object's text: `{"a":1,"b":[2]}`.
    pub fn to_text(&self) -> String {
        format!("{{{}}}", self.inner_text())
    }

    /// RFC 7396: a member set to `null` is removed, an object is merged into
    /// the object it replaces (or into `{}`), any other value replaces the
    /// member. A replaced member keeps its place; a new one goes last.
    pub fn merge_patch(&mut self, patch: Members) {
        for (key, value) in patch.0 {
            if value.get() == "null" {
                self.0.retain(|(k, _)| *k != key);
                continue;
            }
            let value = match Members::parse(value.get()) {
                Ok(patch) => {
                    let mut base = self
                        .get(&key)
                        .and_then(|current| Members::parse(current.get()).ok())
                        .unwrap_or_default();
                    base.merge_patch(patch);
                    RawValue::from_string(base.to_text()).expect("members make an object")
                }
                Err(NotAnObject) => value,
            };
            self.set(key, value);
        }
    }

    fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    /// Replaces the first member named `key` (dropping any duplicates), or
    /// appends one.
    fn set(&mut self, key: String, value: Box<RawValue>) {
        match self.0.iter().position(|(k, _)| *k == key) {
            Some(at) => {
                self.0[at].1 = value;
                let mut seen = 0;
                self.0.retain(|(k, _)| {
                    if *k == key {
                        seen += 1;
                        seen == 1
                    } else {
                        true
                    }
                });
            }
            None => self.0.push((key, value)),
        }
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(target: &str, patch: &str) -> String {
        let mut target = Members::parse(target).unwrap();
        target.merge_patch(Members::parse(patch).unwrap());
        target.to_text()
    }

    /// RFC 7396 appendix A, where target and patch are objects (a patch
    /// that is not an object is refused by the API before it gets here).
    #[test]
    fn rfc_7396_examples() {
        let cases = [
            (r#"{"a":"b"}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"b":"c"}"#, r#"{"a":"b","b":"c"}"#),
            (r#"{"a":"b"}"#, r#"{"a":null}"#, r#"{}"#),
            (r#"{"a":"b","b":"c"}"#, r#"{"a":null}"#, r#"{"b":"c"}"#),
            (r#"{"a":["b"]}"#, r#"{"a":"c"}"#, r#"{"a":"c"}"#),
            (r#"{"a":"c"}"#, r#"{"a":["b"]}"#, r#"{"a":["b"]}"#),
            (
                r#"{"a":{"b":"c"}}"#,
                r#"{"a":{"b":"d","c":null}}"#,
                r#"{"a":{"b":"d"}}"#,
            ),
            (r#"{"a":[{"b":"c"}]}"#, r#"{"a":[1]}"#, r#"{"a":[1]}"#),
            (r#"{"e":null}"#, r#"{"a":1}"#, r#"{"e":null,"a":1}"#),
            (
                r#"{}"#,
                r#"{"a":{"bb":{"ccc":null}}}"#,
                r#"{"a":{"bb":{}}}"#,
            ),
            (r#"{"a":"foo"}"#, r#"{"a":null}"#, r#"{}"#),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(merged(target, patch), expected, "{target} + {patch}");
        }
    }

    #[test]
    fn untouched_values_keep_their_text_and_order() {
        let target = r#"{"big": 1e+16, "neg": -0.0, "price": 1.10, "s": "\ud800\u0000é\"", "n": {"x": 1.50}}"#;
        assert_eq!(
            merged(target, r#"{"price": 2, "new": [1.0]}"#),
            r#"{"big":1e+16,"neg":-0.0,"price":2,"s":"\ud800\u0000é\"","n":{"x": 1.50},"new":[1.0]}"#
        );
        assert_eq!(
            merged(target, r#"{"n": {"y": 2.50}}"#),
            r#"{"big":1e+16,"neg":-0.0,"price":1.10,"s":"\ud800\u0000é\"","n":{"x":1.50,"y":2.50}}"#
        );
    }

    #[test]
    fn reserved_keys_and_non_objects_are_found() {
        let members = Members::parse(r#"{"theme": 1, "subscribed": true}"#).unwrap();
        assert_eq!(members.reserved_key(), Some("subscribed"));
        assert_eq!(
            Members::parse(r#"{"a":{"subscribed":1}}"#)
                .unwrap()
                .reserved_key(),
            None
        );
        for text in ["[1]", "1", "\"{}\"", "{", "{\"a\":NaN}", ""] {
            assert_eq!(Members::parse(text).unwrap_err(), NotAnObject, "{text}");
        }
    }
}
