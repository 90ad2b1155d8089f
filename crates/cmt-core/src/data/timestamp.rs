//! Publication timestamps: unix seconds from the forms datasets use.
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use serde_json::Value;

/// Parses a timestamp written as text into unix seconds (UTC).
///
/// Accepted forms, tried in this order:
/// - a unix time in seconds: `1609459200`, or a decimal number (`1609459200.0`, as pandas
///   writes integer columns that hold a missing value); fractions are truncated;
/// - RFC 3339: `2021-01-01T00:00:00Z`, `2021-01-01T01:00:00+01:00`, `2021-01-01 00:00:00Z`;
/// - a date `YYYY-MM-DD` (midnight UTC);
/// - a date and time without offset, `YYYY-MM-DD HH:MM:SS[.fff]` or with `T` (taken as UTC).
///
/// Times before 1970-01-01 are rejected (timestamps are unsigned). The error is a message
/// naming the value, for the caller to place (file, line, field).
pub fn parse_timestamp(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty timestamp".to_string());
    }
    let numeric = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if numeric && !looks_like_date(s) {
        if let Ok(v) = s.parse::<u64>() {
            return Ok(v);
        }
        return match s.parse::<f64>() {
            Ok(v) => from_f64(v).map_err(|m| format!("{m}: {s:?}")),
            Err(_) => Err(format!("not a timestamp: {s:?}")),
        };
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return from_i64(t.timestamp()).map_err(|m| format!("{m}: {s:?}"));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return from_i64(t.and_utc().timestamp()).map_err(|m| format!("{m}: {s:?}"));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return from_i64(t.and_utc().timestamp()).map_err(|m| format!("{m}: {s:?}"));
        }
    }
    Err(format!(
        "not a timestamp (expected unix seconds, RFC 3339 or YYYY-MM-DD): {s:?}"
    ))
}

/// A JSON timestamp field: `null` is absent, a number is unix seconds (fractions
/// truncated), a string goes through [`parse_timestamp`]. Errors are messages without the
/// field name.
pub(crate) fn timestamp_from_json(v: &Value) -> Result<Option<u64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if let Some(i) = n.as_i64() {
                from_i64(i).map(Some).map_err(|m| format!("{m}: {i}"))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                from_f64(f).map(Some).map_err(|m| format!("{m}: {n}"))
            }
        }
        Value::String(s) => parse_timestamp(s).map(Some),
        other => Err(format!(
            "expected a unix time or an RFC 3339 string, found {}",
            super::json_kind(other)
        )),
    }
}

fn looks_like_date(s: &str) -> bool {
    // `2021-01-01` is all digits and dashes: a date, not a number.
    let b = s.as_bytes();
    b.len() >= 10 && b[4] == b'-' && b[7] == b'-'
}

fn from_i64(v: i64) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| "timestamp before 1970-01-01".to_string())
}

fn from_f64(v: f64) -> Result<u64, String> {
    if !v.is_finite() {
        Err("timestamp is not a finite number".to_string())
    } else if v < 0.0 {
        Err("timestamp before 1970-01-01".to_string())
    } else if v >= u64::MAX as f64 {
        Err("timestamp out of range".to_string())
    } else {
        Ok(v.trunc() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_timestamp("1609459200"), Ok(1_609_459_200));
        assert_eq!(parse_timestamp(" 1609459200.9 "), Ok(1_609_459_200));
        assert_eq!(parse_timestamp("2021-01-01T00:00:00Z"), Ok(1_609_459_200));
        assert_eq!(
            parse_timestamp("2021-01-01T01:00:00+01:00"),
            Ok(1_609_459_200)
        );
        assert_eq!(parse_timestamp("2021-01-01"), Ok(1_609_459_200));
        assert_eq!(parse_timestamp("2021-01-01 00:00:10"), Ok(1_609_459_210));
        assert_eq!(parse_timestamp("1970-01-01"), Ok(0));
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "yesterday",
            "-5",
            "1969-12-31",
            "2021-13-01",
            "nan",
            "inf",
            "1e400",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_values() {
        use serde_json::json;
        assert_eq!(timestamp_from_json(&json!(null)), Ok(None));
        assert_eq!(timestamp_from_json(&json!(5)), Ok(Some(5)));
        assert_eq!(timestamp_from_json(&json!(5.7)), Ok(Some(5)));
        assert!(timestamp_from_json(&json!(-1)).is_err());
        assert!(timestamp_from_json(&json!(-1.5)).is_err());
        assert!(timestamp_from_json(&json!(true)).is_err());
        assert_eq!(
            timestamp_from_json(&json!("1970-01-02T00:00:00Z")),
            Ok(Some(86_400))
        );
    }
}
