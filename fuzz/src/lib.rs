//! Shared pieces of the fuzz targets: numbers as an attacker would send them, so structured
//! inputs reach the arithmetic behind the parsers (plain byte mutation rarely builds two
//! 19-digit numbers of opposite sign in one query).

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use serde_json::Value;

/// Values at the edges of the integer types.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Edge {
    I64Min,
    I64Max,
    U64Max,
    U64MaxPlusOne,
    Zero,
    MinusOne,
}

/// One number field: any integer, float or edge, as a JSON number or as a string (Docker
/// sends exit codes and durations as strings), or something that is not a number at all.
#[derive(Arbitrary, Debug, Clone)]
pub enum Num {
    I(i64),
    U(u64),
    F(f64),
    Edge(Edge),
    IntText(i64),
    EdgeText(Edge),
    Text(String),
    Bool(bool),
    Null,
}

impl Edge {
    fn text(self) -> &'static str {
        match self {
            Edge::I64Min => "-9223372036854775808",
            Edge::I64Max => "9223372036854775807",
            Edge::U64Max => "18446744073709551615",
            Edge::U64MaxPlusOne => "18446744073709551616",
            Edge::Zero => "0",
            Edge::MinusOne => "-1",
        }
    }

    fn json(self) -> Value {
        match self {
            Edge::I64Min => Value::from(i64::MIN),
            Edge::I64Max => Value::from(i64::MAX),
            Edge::U64Max => Value::from(u64::MAX),
            Edge::U64MaxPlusOne => Value::from(18_446_744_073_709_551_616_f64),
            Edge::Zero => Value::from(0),
            Edge::MinusOne => Value::from(-1),
        }
    }
}

impl Num {
    /// As a JSON value (a non-finite float is null: JSON has none).
    pub fn json(&self) -> Value {
        match self {
            Num::I(n) => Value::from(*n),
            Num::U(n) => Value::from(*n),
            Num::F(f) if f.is_finite() => Value::from(*f),
            Num::Edge(e) => e.json(),
            Num::IntText(n) => Value::from(n.to_string()),
            Num::EdgeText(e) => Value::from(e.text()),
            Num::Text(s) => Value::from(s.as_str()),
            Num::Bool(b) => Value::from(*b),
            Num::F(_) | Num::Null => Value::Null,
        }
    }

    /// As query-string text.
    pub fn text(&self) -> String {
        match self {
            Num::I(n) | Num::IntText(n) => n.to_string(),
            Num::U(n) => n.to_string(),
            Num::F(f) => f.to_string(),
            Num::Edge(e) | Num::EdgeText(e) => e.text().to_string(),
            Num::Text(s) => s.clone(),
            Num::Bool(b) => b.to_string(),
            Num::Null => String::new(),
        }
    }
}
