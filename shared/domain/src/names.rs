//! Validated names: SKUs, locations and reservation ids.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A name that broke its rules: which rule, for the error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be 1 to {max} characters of A-Z a-z 0-9 {extra}; got {got:?}")]
pub struct InvalidName {
    pub what: &'static str,
    pub max: usize,
    pub extra: &'static str,
    pub got: String,
}

fn check(raw: &str, what: &'static str, max: usize, extra: &'static str) -> Result<(), InvalidName> {
    let ok = !raw.is_empty()
        && raw.len() <= max
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b));
    if ok {
        Ok(())
    } else {
        // Keep the echo short: the input came from outside and may be huge.
        let got: String = raw.chars().take(64).collect();
        Err(InvalidName { what, max, extra, got })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:tt, $extra:literal, $pattern:tt) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(try_from = "String", into = "String")]
        // The same rule as `check`, for the OpenAPI description (its names are ASCII, so length is bytes too).
        #[schema(value_type = String, pattern = $pattern, min_length = 1, max_length = $max)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(raw: &str) -> Result<Self, InvalidName> {
                check(raw, $what, $max, $extra)?;
                Ok(Self(raw.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(raw: String) -> Result<Self, InvalidName> {
                check(&raw, $what, $max, $extra)?;
                Ok(Self(raw))
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A stock-keeping unit: 1–128 characters of `A-Z a-z 0-9 . _ - : /`.
    Sku, "sku", 128, "._-:/", "^[A-Za-z0-9._:/-]{1,128}$"
);
name_type!(
    /// A place that holds stock: 1–64 characters of `A-Z a-z 0-9 . _ - : /`.
    Location, "location", 64, "._-:/", "^[A-Za-z0-9._:/-]{1,64}$"
);
name_type!(
    /// A reservation's id, chosen by the client or made by the store. No `/`: it travels in URL paths.
    ReservationId, "reservation_id", 128, "._-:", "^[A-Za-z0-9._:-]{1,128}$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_accepts_its_whole_alphabet() {
        assert!(Sku::parse("AZaz09._-:/").is_ok());
        assert!(Sku::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn sku_refuses_empty_long_and_foreign_characters() {
        for bad in ["", "a b", "é", "a*", "a\n", "<script>"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Sku::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn location_is_at_most_64_characters() {
        assert!(Location::parse(&"l".repeat(64)).is_ok());
        assert!(Location::parse(&"l".repeat(65)).is_err());
    }

    #[test]
    fn reservation_ids_cannot_carry_slashes() {
        assert!(ReservationId::parse("cart-1:abc").is_ok());
        assert!(ReservationId::parse("a/b").is_err());
    }

    #[test]
    fn names_deserialize_through_validation() {
        let sku: Result<Sku, _> = serde_json_like("\"ok-1\"");
        assert!(sku.is_ok());
    }

    // The domain crate has no JSON dependency; a tiny String round-trip stands in for serde here.
    fn serde_json_like(quoted: &str) -> Result<Sku, InvalidName> {
        Sku::try_from(quoted.trim_matches('"').to_owned())
    }
}
