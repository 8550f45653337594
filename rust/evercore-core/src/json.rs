//! JSON text exactly as CPython's `json.dumps(value, ensure_ascii=False,
//! separators=(",", ":"))` writes it, so that the Rust kernels and their Python
//! twins produce the same bytes.

/// What each byte becomes inside a JSON string: 0 = itself, b'u' = `\u00XX`,
/// anything else = a backslash followed by that byte.
static ESCAPES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[b'\x08' as usize] = b'b';
    table[b'\t' as usize] = b't';
    table[b'\n' as usize] = b'n';
    table[b'\x0c' as usize] = b'f';
    table[b'\r' as usize] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Append `text` as a quoted JSON string. Only `"`, `\` and control characters
/// below U+0020 are escaped (Python's `ensure_ascii=False`; `\u00XX` in lower case);
/// everything else, U+007F and non-ASCII included, is copied as UTF-8.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        // Most text needs no escaping: skip it eight bytes at a time.
        if let Some(chunk) = bytes.get(index..index + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape(u64::from_le_bytes(word)) {
                index += 8;
                continue;
            }
        }
        let byte = bytes[index];
        let escape = ESCAPES[byte as usize];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..index]);
            if escape == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(byte >> 4) as usize]);
                out.push(HEX[(byte & 0xf) as usize]);
            } else {
                out.push(b'\\');
                out.push(escape);
            }
            start = index + 1;
        }
        index += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any of eight bytes is `"`, `\\` or below 0x20 (exact, by the classic
/// "has a zero byte" bit trick; bytes of 0x80 and above never match).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    below_space | has_zero(word ^ (ONES * u64::from(b'"'))) | has_zero(word ^ (ONES * u64::from(b'\\'))) != 0
}

/// Append an integer the way Python prints it.
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Append a finite float exactly as Python's `repr(float)` does: the shortest
/// digits that round-trip, in fixed notation with at least one decimal
/// (`1.0`, `0.0001`, `1000000000000000.0`) unless the decimal exponent is below -4
/// or above 15 (`1e-05`, `1e+16`: sign and at least two exponent digits).
///
/// Returns false (writing nothing) for NaN and the infinities, which JSON lacks.
pub fn write_f64(out: &mut Vec<u8>, value: f64) -> bool {
    if !value.is_finite() {
        return false;
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(value);
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    // ryu writes fixed notation for decimal exponents -5..16 and Python for -4..16,
    // with the same digits: copy it unless it is scientific or 0.0000ddd.
    if !unsigned.contains('e') && !unsigned.starts_with("0.0000") {
        out.extend_from_slice(text.as_bytes());
        return true;
    }
    let Some(digits) = ShortestDigits::parse(unsigned) else {
        // Not ryu's documented output; nothing sensible to do but copy it.
        out.extend_from_slice(text.as_bytes());
        return true;
    };
    if value.is_sign_negative() {
        out.push(b'-');
    }
    let point = digits.point;
    if point <= -4 || point > 16 {
        write_scientific(out, digits.digits(), point - 1);
    } else {
        write_fixed(out, digits.digits(), point);
    }
    true
}

/// The significant digits of a float, without leading or trailing zeros, and the
/// position of the decimal point relative to them (the value is `0.DIGITS * 10^point`).
struct ShortestDigits {
    buffer: [u8; 32],
    length: usize,
    point: i32,
}

impl ShortestDigits {
    /// Read ryu's unsigned output of a non-zero float (`1.5e-7`, `0.00001`); None
    /// if it does not look like that.
    fn parse(text: &str) -> Option<Self> {
        let (mantissa, exponent) = match text.split_once('e') {
            Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let mut digits =
            ShortestDigits { buffer: [0; 32], length: 0, point: i32::try_from(integer.len()).ok()? + exponent };
        for byte in integer.bytes().chain(fraction.bytes()) {
            if !byte.is_ascii_digit() {
                return None;
            }
            if byte == b'0' && digits.length == 0 {
                digits.point -= 1;
                continue;
            }
            *digits.buffer.get_mut(digits.length)? = byte;
            digits.length += 1;
        }
        while digits.length > 0 && digits.buffer[digits.length - 1] == b'0' {
            digits.length -= 1;
        }
        (digits.length > 0).then_some(digits)
    }

    fn digits(&self) -> &[u8] {
        &self.buffer[..self.length]
    }
}

fn write_scientific(out: &mut Vec<u8>, digits: &[u8], exponent: i32) {
    out.push(digits[0]);
    if digits.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..]);
    }
    out.push(b'e');
    out.push(if exponent < 0 { b'-' } else { b'+' });
    let magnitude = exponent.unsigned_abs();
    if magnitude < 10 {
        out.push(b'0');
    }
    out.extend_from_slice(itoa::Buffer::new().format(magnitude).as_bytes());
}

fn write_fixed(out: &mut Vec<u8>, digits: &[u8], point: i32) {
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else if point as usize >= digits.len() {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', point as usize - digits.len()));
        out.extend_from_slice(b".0");
    } else {
        let (integer, fraction) = digits.split_at(point as usize);
        out.extend_from_slice(integer);
        out.push(b'.');
        out.extend_from_slice(fraction);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(value: f64) -> String {
        let mut out = Vec::new();
        assert!(write_f64(&mut out, value));
        String::from_utf8(out).unwrap()
    }

    fn string(text: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_match_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (123.456, "123.456"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e-7, "1e-07"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (1.2345e-5, "1.2345e-05"),
            (1e22, "1e+22"),
            (1e100, "1e+100"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.30000000000000004, "0.30000000000000004"),
            (100.0, "100.0"),
            (-1e-7, "-1e-07"),
            (-1.5e300, "-1.5e+300"),
            (-0.00001234, "-1.234e-05"),
        ];
        for &(value, expected) in cases {
            assert_eq!(float(value), expected, "repr of {value:e}");
        }
    }

    #[test]
    fn non_finite_floats_are_refused() {
        let mut out = Vec::new();
        assert!(!write_f64(&mut out, f64::NAN));
        assert!(!write_f64(&mut out, f64::INFINITY));
        assert!(!write_f64(&mut out, f64::NEG_INFINITY));
        assert!(out.is_empty());
    }

    #[test]
    fn strings_escape_like_python_without_ensure_ascii() {
        assert_eq!(string(""), r#""""#);
        assert_eq!(string("plain"), r#""plain""#);
        assert_eq!(string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(string("\n\r\t\x08\x0c"), r#""\n\r\t\b\f""#);
        assert_eq!(string("\x00\x1f\x7f"), "\"\\u0000\\u001f\x7f\"");
        assert_eq!(string("é€😀"), "\"é€😀\"");
    }

    /// Python's escaping, one character at a time.
    fn reference(text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                c if c < ' ' => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn escapes_are_found_at_every_position_of_a_word() {
        for special in ["\"", "\\", "\n", "\x00", "\x1f", "\x7f", "é", "😀"] {
            for length in [1, 7, 8, 9, 16, 23] {
                for position in 0..length {
                    let text = format!("{}{special}{}", "a".repeat(position), "b".repeat(length - position));
                    assert_eq!(string(&text), reference(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn integers_print_in_full() {
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        assert_eq!(out, b"-9223372036854775808");
    }
}
