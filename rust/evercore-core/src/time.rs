//! Calendar arithmetic for timestamps given as proleptic Gregorian fields (what
//! Python's `datetime` holds), without any time-zone database.

/// Days from 1970-01-01 to the given date (negative before it), for years 1..=9999.
/// Howard Hinnant's `days_from_civil`.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Days from 1970-01-01 to 2000-01-01, PostgreSQL's epoch.
const POSTGRES_EPOCH_DAYS: i64 = 10_957;

/// A broken-down UTC time, as Python's `datetime` stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub microsecond: u32,
}

impl Civil {
    /// Decode the 10-byte state of a pickled `datetime` (`datetime.__reduce__()`):
    /// year (2 bytes, big-endian), month, day, hour, minute, second, microsecond
    /// (3 bytes). The state format is fixed by pickle compatibility. Returns None
    /// for anything that is not a valid state.
    pub fn from_pickle_state(state: &[u8]) -> Option<Civil> {
        let [y1, y2, month, day, hour, minute, second, u1, u2, u3] = *state else {
            return None;
        };
        let civil = Civil {
            year: i32::from(u16::from_be_bytes([y1, y2])),
            month: u32::from(month),
            day: u32::from(day),
            hour: u32::from(hour),
            minute: u32::from(minute),
            second: u32::from(second),
            microsecond: u32::from_be_bytes([0, u1, u2, u3]),
        };
        civil.is_valid().then_some(civil)
    }

    fn is_valid(&self) -> bool {
        (1..=9999).contains(&self.year)
            && (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && self.microsecond < 1_000_000
    }

    /// Microseconds since 2000-01-01T00:00:00 (PostgreSQL's `timestamptz` value).
    pub fn postgres_microseconds(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day) - POSTGRES_EPOCH_DAYS;
        let seconds =
            days * 86_400 + i64::from(self.hour) * 3_600 + i64::from(self.minute) * 60 + i64::from(self.second);
        seconds * 1_000_000 + i64::from(self.microsecond)
    }

    /// Append `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`: Python's `isoformat()` of the naive
    /// UTC time followed by `Z`.
    pub fn write_iso_utc(&self, out: &mut Vec<u8>) {
        fn pad(out: &mut Vec<u8>, value: u32, width: usize) {
            let mut buffer = itoa::Buffer::new();
            let digits = buffer.format(value).as_bytes();
            out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits.len())));
            out.extend_from_slice(digits);
        }
        pad(out, self.year.unsigned_abs(), 4);
        out.push(b'-');
        pad(out, self.month, 2);
        out.push(b'-');
        pad(out, self.day, 2);
        out.push(b'T');
        pad(out, self.hour, 2);
        out.push(b':');
        pad(out, self.minute, 2);
        out.push(b':');
        pad(out, self.second, 2);
        if self.microsecond != 0 {
            out.push(b'.');
            pad(out, self.microsecond, 6);
        }
        out.push(b'Z');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn civil(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32, microsecond: u32) -> Civil {
        Civil { year, month, day, hour, minute, second, microsecond }
    }

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 1, 1), POSTGRES_EPOCH_DAYS);
        assert_eq!(days_from_civil(2000, 3, 1), POSTGRES_EPOCH_DAYS + 60);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(1, 1, 1), -719_162);
        assert_eq!(days_from_civil(9999, 12, 31), 2_932_896);
    }

    #[test]
    fn postgres_microseconds_from_epoch() {
        assert_eq!(civil(2000, 1, 1, 0, 0, 0, 0).postgres_microseconds(), 0);
        assert_eq!(civil(2000, 1, 1, 0, 0, 1, 5).postgres_microseconds(), 1_000_005);
        assert_eq!(civil(1999, 12, 31, 23, 59, 59, 999_999).postgres_microseconds(), -1);
    }

    #[test]
    fn iso_format_matches_python() {
        let mut out = Vec::new();
        civil(2024, 2, 29, 7, 5, 3, 0).write_iso_utc(&mut out);
        out.push(b' ');
        civil(1, 1, 1, 0, 0, 0, 42).write_iso_utc(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "2024-02-29T07:05:03Z 0001-01-01T00:00:00.000042Z");
    }

    #[test]
    fn pickle_state_decodes_and_rejects_garbage() {
        let state = [0x07, 0xea, 11, 29, 18, 45, 48, 0x01, 0xb9, 0xc6];
        assert_eq!(Civil::from_pickle_state(&state), Some(civil(2026, 11, 29, 18, 45, 48, 113_094)));
        assert_eq!(Civil::from_pickle_state(&state[..9]), None);
        let bad_month = [0x07, 0xea, 13, 29, 18, 45, 48, 0, 0, 0];
        assert_eq!(Civil::from_pickle_state(&bad_month), None);
    }
}
