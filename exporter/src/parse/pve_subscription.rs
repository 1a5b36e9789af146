//! Parser of Proxmox VE's subscription cache `/etc/subscription` (pve-manager
//! `PVE::API2::Subscription`, the proxmox-subscription crate's `files.rs`
//! `parse_subscription_file`/`write_subscription`).
//!
//! Line 1 is the subscription key, line 2 a base64 checksum, and the remaining lines one
//! base64 text (Perl's encoder wraps it at 76 columns) of a JSON object: `status` (`Active`
//! or `active`, `New`, `NotFound`, `Invalid`, `Expired`, `Suspended`), `nextduedate`
//! (`YYYY-MM-DD`, `0000-00-00` for none), `checktime` (when the node last asked the shop),
//! `productname`, `regdate`, `key`, `serverid`. A key that was entered but never checked is
//! written as the key line alone (status `New`); an empty file means no subscription.
//!
//! The key is a secret of the customer's: this parser reads only its level letter (pve-manager's
//! pattern `pve([1248])([cbsp])-[0-9a-f]{10}`: c community, b basic, s standard, p premium) and
//! never returns the key itself. The checksum is not verified (it guards the cache against
//! edits, not against us), so the status is the one the node recorded at `checktime`.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::error::ParseError;

/// What the subscription cache says, without the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The recorded status, lower case (`active`, `new`, `notfound`, `invalid`, `expired`,
    /// `suspended`).
    pub status: String,
    /// The level letter of the key (`c`, `b`, `s`, `p`), `None` for a key of another shape.
    pub level: Option<char>,
    /// `nextduedate` as seconds since the epoch (midnight UTC), `None` when absent or
    /// `0000-00-00`.
    pub next_due: Option<i64>,
    /// `checktime`: when the node last checked the subscription with Proxmox's server.
    pub checked: Option<i64>,
}

/// Parses the file; `Ok(None)` for an empty file (no subscription).
pub fn parse(text: &str) -> Result<Option<Subscription>, ParseError> {
    let mut lines = super::lines(text);
    let Some(key) = lines.next().map(str::trim_ascii).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    let level = level_of(key);
    if lines.next().is_none() {
        // The key alone: entered, not yet checked.
        return Ok(Some(Subscription {
            status: "new".into(),
            level,
            next_due: None,
            checked: None,
        }));
    }
    let encoded: String = lines.flat_map(|l| l.split_ascii_whitespace()).collect();
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let json = lenient
        .decode(encoded.as_bytes())
        .map_err(|e| ParseError::new(format!("subscription data is not base64: {e}")))?;
    let info: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| ParseError::new(format!("subscription data is not JSON: {e}")))?;
    let status = info
        .get("status")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic()))
        .ok_or_else(|| ParseError::new("subscription data has no status word"))?
        .to_ascii_lowercase();
    let next_due = match info.get("nextduedate").and_then(|d| d.as_str()) {
        None | Some("") | Some("0000-00-00") => None,
        Some(date) => Some(
            date_to_epoch(date)
                .ok_or_else(|| ParseError::new(format!("nextduedate is not a YYYY-MM-DD date: {date:?}")))?,
        ),
    };
    let checked = match info.get("checktime") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Ok(Some(Subscription {
        status,
        level,
        next_due,
        checked,
    }))
}

/// The level letter of a key `pve<sockets><level>-<10 hex digits>`.
fn level_of(key: &str) -> Option<char> {
    let rest = key.strip_prefix("pve")?.as_bytes();
    let [sockets, level, b'-', hex @ ..] = rest else {
        return None;
    };
    let valid = matches!(sockets, b'1' | b'2' | b'4' | b'8')
        && matches!(level, b'c' | b'b' | b's' | b'p')
        && hex.len() == 10
        && hex.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    valid.then_some(*level as char)
}

/// `YYYY-MM-DD` as seconds since the epoch at midnight UTC (the proleptic Gregorian calendar;
/// days from civil, as in Howard Hinnant's date algorithms).
pub fn date_to_epoch(date: &str) -> Option<i64> {
    let bytes = date.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = &date[range];
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if year == 0 || day < 1 || day > days_in_month {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some((era * 146_097 + day_of_era - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../fixtures/proxmox-host/etc/subscription");

    #[test]
    fn fixture() {
        let s = parse(FIXTURE).unwrap().unwrap();
        assert_eq!(s.status, "active");
        assert_eq!(s.level, Some('c'));
        // 2027-03-14T00:00:00Z.
        assert_eq!(s.next_due, Some(1_804_982_400));
        assert_eq!(s.checked, Some(1_733_313_600));
    }

    /// A trial subscription as pve-manager writes it: the JSON's base64 wrapped at 76 columns,
    /// a trial key (no level letter), `nextduedate` 0000-00-00.
    #[test]
    fn pve_written_trial() {
        let text = "pve4t-77aa88bb99\nTRIALSUM0000000000000\neyJjaGVja3RpbWUiOiAxNzEyMDAwMDAwLCAia2V5IjogInB2ZTR0LTc3YWE4OGJiOTkiLCAibmV4\ndGR1ZWRhdGUiOiAiMDAwMC0wMC0wMCIsICJwcm9kdWN0bmFtZSI6ICJQcm94bW94IFZFIEZyZWUg\nVHJpYWwgU3Vic2NyaXB0aW9uIDEgTW9udGggKDQgQ1BVcykiLCAic3RhdHVzIjogIkFjdGl2ZSIs\nICJyZWdkYXRlIjogIjIwMjQtMDQtMDEgMDA6MDA6MDAifQ==\n";
        let s = parse(text).unwrap().unwrap();
        assert_eq!(s.status, "active");
        assert_eq!(s.level, None, "a trial key has no level letter");
        assert_eq!(s.next_due, None);
        assert_eq!(s.checked, Some(1_712_000_000));
    }

    #[test]
    fn key_only_and_empty() {
        let s = parse("pve2b-0123456789\n").unwrap().unwrap();
        assert_eq!((s.status.as_str(), s.level, s.next_due), ("new", Some('b'), None));
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("\n").unwrap(), None);
    }

    #[test]
    fn garbage() {
        assert!(parse("pve2b-0123456789\nsum\n!!!not base64!!!\n").is_err());
        // Base64 of `not json`.
        assert!(parse("pve2b-0123456789\nsum\nbm90IGpzb24=\n").is_err());
        // Base64 of `{"status":"Active","nextduedate":"2027-13-01"}`.
        assert!(parse("k\nsum\neyJzdGF0dXMiOiJBY3RpdmUiLCJuZXh0ZHVlZGF0ZSI6IjIwMjctMTMtMDEifQ==\n").is_err());
        // Base64 of `{}`: no status.
        assert!(parse("k\nsum\ne30=\n").is_err());
    }

    #[test]
    fn levels() {
        assert_eq!(level_of("pve1c-0123456789"), Some('c'));
        assert_eq!(level_of("pve8p-abcdef0123"), Some('p'));
        assert_eq!(level_of("pve3c-0123456789"), None);
        assert_eq!(level_of("pve1x-0123456789"), None);
        assert_eq!(level_of("pve1c-012345678"), None);
        assert_eq!(level_of("pve1c-ABCDEF0123"), None);
        assert_eq!(level_of("pbs1c-0123456789"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(date_to_epoch("1970-01-01"), Some(0));
        assert_eq!(date_to_epoch("2000-03-01"), Some(951_868_800));
        assert_eq!(date_to_epoch("2024-02-29"), Some(1_709_164_800));
        assert_eq!(date_to_epoch("2023-02-29"), None);
        assert_eq!(date_to_epoch("2027-03-14"), Some(1_804_982_400));
        assert_eq!(date_to_epoch("1969-12-31"), Some(-86_400));
        for bad in [
            "2027-3-14",
            "2027-03-32",
            "2027-00-10",
            "0000-00-00",
            "20270314xx",
            "+027-03-14",
        ] {
            assert_eq!(date_to_epoch(bad), None, "{bad}");
        }
    }
}
