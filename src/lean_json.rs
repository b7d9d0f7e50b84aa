//! Reading JSON without allocating what is thrown away: strings borrowed from the input when
//! they have no escapes, and string maps of which only some keys are kept. The webhook's
//! review reader and the reconciler's pod watch use both.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A string borrowed from the input when it has no escapes.
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// A map of strings of which only the keys `keep` accepts are allocated; the others are
/// still type-checked (every value a string), so a malformed map is still an error.
pub fn kept_strings<'de, D: Deserializer<'de>>(
    d: D,
    keep: fn(&str) -> bool,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Kept(fn(&str) -> bool);
    impl<'de> Visitor<'de> for Kept {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<Text<'de>>()? {
                let value = map.next_value::<Text<'de>>()?;
                if (self.0)(&key.0) {
                    kept.insert(key.0.into_owned(), value.0.into_owned());
                }
            }
            Ok(kept)
        }
    }
    d.deserialize_map(Kept(keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "only_a")]
        map: BTreeMap<String, String>,
    }

    fn only_a<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
        kept_strings(d, |k| k.starts_with('a'))
    }

    #[test]
    fn keeps_only_accepted_keys_and_still_type_checks_the_rest() {
        let h: Holder =
            serde_json::from_str(r#"{"map": {"a1": "x", "b": "y", "a\"2": "z"}}"#).expect("map");
        assert_eq!(h.map.len(), 2);
        assert_eq!(h.map["a\"2"], "z");
        let bad = serde_json::from_str::<Holder>(r#"{"map": {"a1": "x", "b": 3}}"#);
        assert!(
            bad.is_err(),
            "a non-string value is an error even when not kept"
        );
    }
}
