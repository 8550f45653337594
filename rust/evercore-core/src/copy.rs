//! PostgreSQL binary COPY data (`COPY ... FROM STDIN (FORMAT binary)`).
//!
//! Layout: an 11-byte signature, a 32-bit flags field and a 32-bit header
//! extension length (both 0); per row a 16-bit field count, then per field a
//! 32-bit byte length and the value in network byte order; a 16-bit -1 trailer.

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\x00";

/// PostgreSQL's limit on one field's size.
const MAX_FIELD_BYTES: usize = (1 << 30) - 1;

/// Why a value cannot go into a COPY field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextProblem {
    /// PostgreSQL text cannot hold U+0000.
    Nul,
    /// Longer than PostgreSQL takes in one field (1 GB - 1 bytes, `MaxAllocSize`).
    TooLong,
}

/// Builds a COPY stream in memory.
pub struct CopyWriter {
    buf: Vec<u8>,
}

impl CopyWriter {
    /// A stream with its header written; `capacity` is a hint in bytes.
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 21);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        CopyWriter { buf }
    }

    /// Start a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    /// An `int8` field.
    pub fn int8(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A `timestamptz` field: microseconds since 2000-01-01 UTC.
    pub fn timestamptz(&mut self, microseconds: i64) {
        self.int8(microseconds);
    }

    /// A `text` field from UTF-8 bytes.
    pub fn text(&mut self, value: &str) -> Result<(), TextProblem> {
        if value.as_bytes().contains(&0) {
            return Err(TextProblem::Nul);
        }
        let length =
            i32::try_from(value.len()).ok().filter(|_| value.len() <= MAX_FIELD_BYTES).ok_or(TextProblem::TooLong)?;
        self.buf.extend_from_slice(&length.to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        Ok(())
    }

    /// Write the trailer and hand over the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stream_is_header_and_trailer() {
        let bytes = CopyWriter::new(0).finish();
        assert_eq!(bytes, b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff");
    }

    #[test]
    fn row_fields_are_length_prefixed_big_endian() {
        let mut writer = CopyWriter::new(0);
        writer.row(2);
        writer.int8(-2);
        writer.text("é").unwrap();
        let bytes = writer.finish();
        assert_eq!(
            &bytes[19..],
            b"\x00\x02\x00\x00\x00\x08\xff\xff\xff\xff\xff\xff\xff\xfe\x00\x00\x00\x02\xc3\xa9\xff\xff"
        );
    }

    #[test]
    fn nul_in_text_is_refused() {
        let mut writer = CopyWriter::new(0);
        assert_eq!(writer.text("a\0b"), Err(TextProblem::Nul));
    }
}
