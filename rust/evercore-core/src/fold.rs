//! Folding a run of JSON objects field by field, without building them.
//!
//! Rehydrating a `StateAggregate` decodes every stored event into its payload class
//! and copies the payload's non-None fields onto the state, so the state ends up
//! with, per field, the value of the *last* event that gave that field a value.
//! [`Folder`] finds that event for each field by scanning the JSON text of every
//! event once; only the winning values are then parsed (by Python's own `json`, so
//! they come out exactly as a per-event decode would give them).
//!
//! The scanner accepts exactly what CPython's `json.loads` (strict mode) accepts,
//! `NaN`, `Infinity` and `-Infinity` included. Anything it does not model
//! exactly — invalid JSON, a top-level value that is not an object, nesting deeper
//! than [`crate::MAX_NESTING`], a number longer than [`MAX_NUMBER_LENGTH`] (which
//! Python's int-size limit could refuse), a required field that is missing — makes
//! it decline: the caller then decodes event by event and reports any error itself.

use crate::MAX_NESTING;

/// Longest number literal accepted; longer ones decline (CPython refuses ints with
/// more digits than `sys.get_int_max_str_digits()`, which is at least 640).
pub const MAX_NUMBER_LENGTH: usize = 600;

/// How a payload class treats one tracked field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Not a field of the payload class: the key is ignored.
    Ignored,
    /// A required field copied onto the state.
    Copied,
    /// A field with a default other than None, copied onto the state (absent: the
    /// default is copied).
    CopiedWithDefault,
    /// A field whose default is None, copied onto the state when present.
    Optional,
    /// A required field the state does not have: it must be present, nothing more.
    Required,
}

impl Kind {
    /// The kind numbered as the Python side numbers it (0..=3; `Optional` is
    /// `CopiedWithDefault` whose default is None).
    pub fn from_code(code: u8) -> Option<Kind> {
        match code {
            0 => Some(Kind::Ignored),
            1 => Some(Kind::Copied),
            2 => Some(Kind::CopiedWithDefault),
            3 => Some(Kind::Required),
            _ => None,
        }
    }
}

/// Which event last gave a field its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Winner {
    /// Event `event`'s JSON holds the value at bytes `start..end` (never `null`).
    Value { event: usize, start: usize, end: usize },
    /// Event `event` lacks the field: its payload class's default applies.
    Default { event: usize },
}

/// The scan gave up; decode event by event instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Declined;

/// Where a tracked key's value lies in the object being scanned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Absent,
    Null,
    Span(usize, usize),
}

/// Folds events one by one; [`Folder::winners`] tells the outcome.
pub struct Folder<'f> {
    fields: &'f [&'f [u8]],
    winners: Vec<Option<Winner>>,
    slots: Vec<Slot>,
}

impl<'f> Folder<'f> {
    /// A folder tracking `fields` (field names as UTF-8).
    pub fn new(fields: &'f [&'f [u8]]) -> Self {
        Folder { fields, winners: vec![None; fields.len()], slots: vec![Slot::Absent; fields.len()] }
    }

    /// Fold event number `event`, whose payload class treats field `i` as `kinds[i]`.
    pub fn add(&mut self, event: usize, kinds: &[Kind], text: &[u8]) -> Result<(), Declined> {
        if kinds.len() != self.fields.len() {
            return Err(Declined);
        }
        self.slots.iter_mut().for_each(|slot| *slot = Slot::Absent);
        Scanner { text, at: 0 }.document(self.fields, &mut self.slots)?;
        for (index, kind) in kinds.iter().enumerate() {
            let found = match (self.slots[index], kind) {
                (_, Kind::Ignored) => None,
                (Slot::Absent, Kind::Copied | Kind::Required) => return Err(Declined),
                (Slot::Absent, Kind::CopiedWithDefault) => Some(Winner::Default { event }),
                (Slot::Span(start, end), Kind::Copied | Kind::CopiedWithDefault) => {
                    Some(Winner::Value { event, start, end })
                }
                (Slot::Absent, Kind::Optional) | (Slot::Null, _) | (_, Kind::Required) => None,
                (Slot::Span(start, end), Kind::Optional) => Some(Winner::Value { event, start, end }),
            };
            if found.is_some() {
                self.winners[index] = found;
            }
        }
        Ok(())
    }

    /// Per tracked field, the event that last gave it a value (None: no event did).
    pub fn winners(&self) -> &[Option<Winner>] {
        &self.winners
    }

    /// Where field `index`'s value lies in the last event added (None when that
    /// event's JSON has no such key or holds `null` there).
    pub fn last_span(&self, index: usize) -> Option<(usize, usize)> {
        match self.slots.get(index)? {
            Slot::Span(start, end) => Some((*start, *end)),
            Slot::Absent | Slot::Null => None,
        }
    }
}

/// A strict JSON scanner over one document.
struct Scanner<'t> {
    text: &'t [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Declined> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// The whole document: one object (surrounding whitespace allowed), recording
    /// where each tracked key's value is; a repeated key keeps its last value.
    fn document(&mut self, fields: &[&[u8]], slots: &mut [Slot]) -> Result<(), Declined> {
        self.skip_whitespace();
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                self.skip_whitespace();
                let key = self.key()?;
                self.skip_whitespace();
                self.expect(b':')?;
                self.skip_whitespace();
                let start = self.at;
                self.value(2)?;
                let end = self.at;
                if let Some(index) = key.and_then(|key| fields.iter().position(|f| *f == key.as_slice())) {
                    let is_null = &self.text[start..end] == b"null";
                    slots[index] = if is_null { Slot::Null } else { Slot::Span(start, end) };
                }
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(Declined),
                }
            }
        }
        self.skip_whitespace();
        if self.at == self.text.len() {
            Ok(())
        } else {
            Err(Declined)
        }
    }

    /// A key, decoded (None when it holds a lone surrogate: it can match no field).
    fn key(&mut self) -> Result<Option<Vec<u8>>, Declined> {
        let start = self.at + 1;
        let escaped = self.string()?;
        let raw = &self.text[start..self.at - 1];
        if escaped {
            Ok(unescape(raw))
        } else {
            Ok(Some(raw.to_vec()))
        }
    }

    /// Any value at nesting level `depth` (the top-level object is level 1).
    fn value(&mut self, depth: usize) -> Result<(), Declined> {
        match self.peek().ok_or(Declined)? {
            b'{' => self.object(depth),
            b'[' => self.array(depth),
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'N' => self.literal(b"NaN"),
            b'I' => self.literal(b"Infinity"),
            b'-' if self.text.get(self.at + 1) == Some(&b'I') => self.literal(b"-Infinity"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Declined),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Declined> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Declined)
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Declined> {
        if depth > MAX_NESTING {
            return Err(Declined);
        }
        self.at += 1;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(Declined);
            }
            self.string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            self.value(depth + 1)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Declined),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Declined> {
        if depth > MAX_NESTING {
            return Err(Declined);
        }
        self.at += 1;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            self.value(depth + 1)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(());
                }
                _ => return Err(Declined),
            }
        }
    }

    /// A string starting at the opening quote; true when it holds escapes.
    fn string(&mut self) -> Result<bool, Declined> {
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            let byte = self.peek().ok_or(Declined)?;
            self.at += 1;
            match byte {
                b'"' => return Ok(escaped),
                b'\\' => {
                    escaped = true;
                    match self.peek().ok_or(Declined)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 1,
                        b'u' => {
                            hex4(self.text.get(self.at + 1..self.at + 5).ok_or(Declined)?)?;
                            self.at += 5;
                        }
                        _ => return Err(Declined),
                    }
                }
                0..=0x1f => return Err(Declined), // control characters must be escaped
                _ => {}
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`, as Python's scanner reads it.
    fn number(&mut self) -> Result<(), Declined> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Declined),
        }
        if self.peek() == Some(b'.') && matches!(self.text.get(self.at + 1), Some(b'0'..=b'9')) {
            self.at += 1;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let mark = self.at;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                self.at = mark; // not an exponent: what follows is judged by the caller
            }
        }
        if self.at - start > MAX_NUMBER_LENGTH {
            return Err(Declined);
        }
        Ok(())
    }
}

fn hex4(digits: &[u8]) -> Result<u16, Declined> {
    let text = std::str::from_utf8(digits).map_err(|_| Declined)?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(Declined);
    }
    u16::from_str_radix(text, 16).map_err(|_| Declined)
}

/// The UTF-8 of an escaped key's content (already validated), None when it holds a
/// lone surrogate (Python keeps those; no field name has one).
fn unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut units: Vec<u16> = Vec::with_capacity(raw.len());
    let text = std::str::from_utf8(raw).ok()?;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buffer = [0u16; 2];
            units.extend_from_slice(c.encode_utf16(&mut buffer));
            continue;
        }
        let unit = match chars.next()? {
            'b' => 0x08,
            'f' => 0x0c,
            'n' => 0x0a,
            'r' => 0x0d,
            't' => 0x09,
            'u' => {
                let digits: String = chars.by_ref().take(4).collect();
                u16::from_str_radix(&digits, 16).ok()?
            }
            other => other as u16, // '"', '\\' and '/' stand for themselves
        };
        units.push(unit);
    }
    String::from_utf16(&units).ok().map(String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [&[u8]; 3] = [b"name", b"amount", b"memo"];

    fn fold(docs: &[(&[Kind], &str)]) -> Result<Vec<Option<Winner>>, Declined> {
        let mut folder = Folder::new(&FIELDS);
        for (event, (kinds, text)) in docs.iter().enumerate() {
            folder.add(event, kinds, text.as_bytes())?;
        }
        Ok(folder.winners().to_vec())
    }

    const ALL: [Kind; 3] = [Kind::Copied, Kind::Copied, Kind::CopiedWithDefault];

    #[test]
    fn the_last_non_null_value_wins() {
        let docs: [(&[Kind], &str); 3] = [
            (&ALL, r#"{"name":"a","amount":1,"memo":"x"}"#),
            (&ALL, r#"{"name":"b","amount":null,"memo":"y"}"#),
            (&ALL, r#" {"amount" : 2 , "name":null} "#),
        ];
        let winners = fold(&docs).unwrap();
        assert_eq!(winners[0], Some(Winner::Value { event: 1, start: 8, end: 11 }));
        assert_eq!(winners[1], Some(Winner::Value { event: 2, start: 13, end: 14 }));
        assert_eq!(winners[2], Some(Winner::Default { event: 2 }));
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let docs: [(&[Kind], &str); 2] = [
            (&ALL, r#"{"name":"a","amount":1,"memo":"x"}"#),
            (&ALL, r#"{"name":"b","amount":1,"name":null,"memo":""}"#),
        ];
        assert_eq!(fold(&docs).unwrap()[0], Some(Winner::Value { event: 0, start: 8, end: 11 }));
    }

    #[test]
    fn escaped_keys_match_their_fields() {
        let docs: [(&[Kind], &str); 1] = [(&ALL, r#"{"n\u0061me":"a","amount":1,"\ud800":2}"#)];
        assert!(matches!(fold(&docs).unwrap()[0], Some(Winner::Value { event: 0, .. })));
    }

    #[test]
    fn an_absent_optional_field_changes_nothing() {
        let kinds = [Kind::Optional, Kind::Copied, Kind::Ignored];
        let docs: [(&[Kind], &str); 2] = [(&kinds, r#"{"name":"a","amount":1}"#), (&kinds, r#"{"amount":2}"#)];
        assert_eq!(fold(&docs).unwrap()[0], Some(Winner::Value { event: 0, start: 8, end: 11 }));
    }

    #[test]
    fn the_last_span_is_that_of_the_last_event() {
        let mut folder = Folder::new(&FIELDS);
        folder.add(0, &ALL, br#"{"name":"a","amount":1}"#).unwrap();
        assert_eq!(folder.last_span(0), Some((8, 11)));
        folder.add(1, &ALL, br#"{"name":null,"amount":1}"#).unwrap();
        assert_eq!((folder.last_span(0), folder.last_span(2), folder.last_span(9)), (None, None, None));
    }

    #[test]
    fn ignored_and_required_fields_never_win() {
        let kinds = [Kind::Required, Kind::Ignored, Kind::Ignored];
        let docs: [(&[Kind], &str); 1] = [(&kinds, r#"{"name":"a","amount":1}"#)];
        assert_eq!(fold(&docs).unwrap(), vec![None, None, None]);
        let docs: [(&[Kind], &str); 1] = [(&kinds, r#"{"amount":1}"#)];
        assert_eq!(fold(&docs), Err(Declined));
    }

    #[test]
    fn declines_what_it_does_not_model() {
        let deep = format!("{{\"name\":{}1{}}}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        let long = format!("{{\"name\":1{}}}", "0".repeat(MAX_NUMBER_LENGTH));
        for text in [
            "[]",
            "{",
            "{}x",
            r#"{"name":1,}"#,
            r#"{"name":01}"#,
            r#"{"name":1.}"#,
            r#"{"name":"\x"}"#,
            "{\"name\":\"\u{1}\"}",
            r#"{"name":"\u12"}"#,
            r#"{"name":-}"#,
            r#"{"name":nul}"#,
            r#"{"amount":1}"#,
            &deep,
            &long,
        ] {
            let docs: [(&[Kind], &str); 1] = [(&ALL, text)];
            assert_eq!(fold(&docs), Err(Declined), "{text}");
        }
    }

    #[test]
    fn accepts_what_python_accepts() {
        let shallow =
            format!("{{\"amount\":0,\"name\":{}1{}}}", "[".repeat(MAX_NESTING - 1), "]".repeat(MAX_NESTING - 1));
        for text in [
            r#"{"name":NaN,"amount":-Infinity}"#,
            r#"{"name":Infinity,"amount":-0.5e-3}"#,
            r#"{"name":"\ud800\"\\\/\b\f\n\r\t","amount":[1,{"a":[]},true,false,null],"memo":{}}"#,
            "{\"name\":\"é\u{7f}\",\"amount\":1E+2}",
            &shallow,
        ] {
            let docs: [(&[Kind], &str); 1] = [(&ALL, text)];
            assert!(fold(&docs).is_ok(), "{text}");
        }
    }
}
