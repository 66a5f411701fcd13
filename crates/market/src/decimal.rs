//! Exact decimal strings as Binance sends them ("43125.17000000").

/// Why a decimal string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?} is not a non-negative decimal")]
pub struct DecimalError {
    pub field: &'static str,
    pub value: String,
}

/// Accepts `digits[.digits]` (what Binance sends for prices and quantities) and returns it
/// unchanged, so no precision is ever lost.
pub fn check(field: &'static str, value: &str) -> Result<String, DecimalError> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(value.contains('.') && frac.is_empty())
        && value.len() <= 64;
    if ok {
        Ok(value.to_string())
    } else {
        Err(DecimalError {
            field,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_binance_decimals_and_refuses_the_rest() {
        assert_eq!(
            check("p", "43125.17000000").as_deref(),
            Ok("43125.17000000")
        );
        assert_eq!(check("q", "0").as_deref(), Ok("0"));
        for bad in ["", ".5", "1.", "-1.0", "1e5", "NaN", "1.2.3", " 1"] {
            assert!(check("p", bad).is_err(), "{bad:?} must be refused");
        }
    }
}
