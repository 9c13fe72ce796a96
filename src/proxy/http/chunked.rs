//! A strict incremental validator for `Transfer-Encoding: chunked` bodies.
//!
//! It tells how many input bytes belong to the body so they can be forwarded
//! as they are (no re-encoding), and rejects anything a backend might read
//! differently: bad or oversized sizes, bare LF, control bytes in extensions,
//! junk after chunk data, trailer lines that are not `name: value`, and more
//! than `MAX_TRAILERS` fields or `MAX_TRAILER_BYTES` bytes of trailers.

use crate::header::is_value_byte;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// After `;`: a chunk extension, up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Start of a trailer line or of the final empty line.
    TrailerStart,
    /// In a trailer field's name, before the colon.
    TrailerName,
    /// In a trailer field's value, up to CR.
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

const MAX_LINE: usize = 4096;
pub const MAX_TRAILERS: usize = 32;
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

/// RFC 9110 token characters (field names).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    line: usize,
    trailers: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError("trailer section too large"));
        }
        Ok(())
    }

    /// Consumes a prefix of `input`; returns its length. Stops at the end of the body.
    pub fn advance(&mut self, input: &[u8]) -> Result<usize, ChunkError> {
        self.advance_with(input, |_| {})
    }

    /// Like `advance`, handing each run of chunk data to `on_data`.
    pub fn advance_with(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let take = (input.len() - i).min(self.size.min(usize::MAX as u64) as usize);
                    on_data(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0) as u64; // ok: matched hex digit
                        self.size = self.size * 16 + v;
                        self.state = State::Size { digits: digits + 1 };
                    }
                    b';' if digits > 0 => {
                        self.state = State::Ext;
                        self.line = 0;
                    }
                    b'\r' if digits > 0 => self.state = State::SizeLf,
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    _ if !is_value_byte(b) => return Err(ChunkError("invalid chunk extension")),
                    _ => {
                        self.line += 1;
                        if self.line > MAX_LINE {
                            return Err(ChunkError("chunk extension too long"));
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk size line not ended by CRLF"));
                    }
                    self.state = if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunk data not followed by CRLF"));
                    }
                    self.state = State::Size { digits: 0 };
                    self.size = 0;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::FinalLf,
                    _ if tchar(b) => {
                        self.trailers += 1;
                        if self.trailers > MAX_TRAILERS {
                            return Err(ChunkError("too many trailer fields"));
                        }
                        self.state = State::TrailerName;
                        self.trailer_byte()?;
                    }
                    _ => return Err(ChunkError("malformed trailer")),
                },
                State::TrailerName => match b {
                    b':' => {
                        self.state = State::Trailer;
                        self.trailer_byte()?;
                    }
                    _ if tchar(b) => self.trailer_byte()?,
                    _ => return Err(ChunkError("malformed trailer field name")),
                },
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    _ if !is_value_byte(b) => return Err(ChunkError("malformed trailer value")),
                    _ => self.trailer_byte()?,
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("trailer not ended by CRLF"));
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError("chunked body not ended by CRLF"));
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(s: &[u8]) -> Result<usize, ChunkError> {
        let mut d = ChunkedDecoder::new();
        let n = d.advance(s)?;
        assert!(d.is_done(), "not done after {n} bytes");
        Ok(n)
    }

    #[test]
    fn complete_body_with_extension_and_trailer_is_consumed_exactly() {
        let body = b"4;x=y\r\nwiki\r\n0\r\nX-T: 1\r\n\r\nGET /";
        assert_eq!(whole(body), Ok(body.len() - 5));
    }

    #[test]
    fn trailers_are_bounded_in_count_and_size() {
        let many: Vec<u8> = [
            &b"0\r\n"[..],
            &b"a: b\r\n".repeat(MAX_TRAILERS + 1),
            b"\r\n",
        ]
        .concat();
        assert!(ChunkedDecoder::new().advance(&many).is_err());
        let ok: Vec<u8> = [&b"0\r\n"[..], &b"a: b\r\n".repeat(MAX_TRAILERS), b"\r\n"].concat();
        assert_eq!(whole(&ok), Ok(ok.len()));
        let big = format!("0\r\nx: {}\r\n\r\n", "v".repeat(MAX_TRAILER_BYTES));
        assert!(ChunkedDecoder::new().advance(big.as_bytes()).is_err());
    }

    #[test]
    fn body_split_byte_by_byte_is_accepted() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        for b in body.chunks(1) {
            assert_eq!(d.advance(b), Ok(1));
        }
        assert!(d.is_done());
    }

    #[test]
    fn bad_sizes_and_line_endings_are_rejected() {
        for bad in [
            &b"-1\r\n"[..],
            b"0x5\r\n",
            b" 5\r\n",
            b"5\nhello",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            b"2\r\nabc\r\n",
            b"0\r\nno-colon\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nX-T: a\x01b\r\n\r\n",
            b"1;e=\x7f\r\n",
        ] {
            assert!(
                ChunkedDecoder::new().advance(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
