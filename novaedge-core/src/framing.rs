//! Request smuggling checks on HTTP/1.1 client connections, for the requests hyper accepts but
//! an edge proxy should refuse.
//!
//! hyper parses request heads strictly (invalid header names and values, obs-fold, invalid or
//! conflicting `Content-Length` values, `Transfer-Encoding` on HTTP/1.0 or without `chunked`
//! last, malformed chunk sizes are all errors), but it follows RFC 9112 where the RFC lets a
//! server go on: a request with both `Content-Length` and `Transfer-Encoding` is read as chunked
//! (and the connection closed after it), repeated identical `Content-Length` fields are read as
//! one, and a bare LF ends a line. hyper also drops the evidence before the request reaches the
//! service: the `Content-Length` field of such a request, the repeated field.
//!
//! Those are the requests that let two parsers in a chain (a CDN in front of NovaEdge, say)
//! disagree about where a request ends, so the proxy refuses them with `400` and closes the
//! connection, as Envoy and Node.js (llhttp) do. To see them it reads the raw bytes of the
//! connection as they go to hyper: the [`Scanner`] follows the request framing (heads,
//! `Content-Length` bodies, chunked bodies with their trailers) and judges each head, and the
//! service refuses the request whose head was refused (requests arrive in order on HTTP/1.1,
//! so the n-th head is the n-th request).
//!
//! The scanner only adds refusals. Where it cannot follow the framing (an upgrade or CONNECT,
//! whose bytes after the head may be a tunnel; a head or chunk hyper will reject anyway; HTTP/2)
//! it stops looking, and hyper's own checks are what apply from there.

use std::fmt;
use std::mem::MaybeUninit;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
    /// More than one `Content-Length` field (even with equal values).
    RepeatedLength,
    /// More than one `Transfer-Encoding` field, or codings other than a single `chunked`.
    TransferCoding,
    /// A line of the head ends in LF without CR.
    BareLf,
    /// The head is longer than the limit. hyper's own limit is its read buffer, which it checks
    /// only while a head is incomplete: a head that arrives whole with the bytes that cross the
    /// limit would pass it.
    HeadTooLarge,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Refusal::RepeatedLength => "more than one Content-Length",
            Refusal::TransferCoding => "Transfer-Encoding other than one \"chunked\"",
            Refusal::BareLf => "a line of the request head ends in LF without CR",
            Refusal::HeadTooLarge => "request head too large",
        })
    }
}

/// Follows the request framing of one HTTP/1.1 connection, byte by byte as it is read.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: State,
    /// The part of the head being read that came in earlier reads, from its first byte after
    /// any empty lines. A head that arrives in one read (most do) is judged where it lies,
    /// without a copy.
    head: Vec<u8>,
    /// Where the line being read starts in the head.
    line_start: usize,
    /// A line of the head being read ended in LF without CR.
    bare_lf: bool,
    /// Heads longer than this are refused.
    max_head: usize,
    /// Header fields of a head; more are left to hyper, which answers `431`.
    max_headers: usize,
    /// Heads read to their end, the one being read excluded.
    heads: u64,
    /// True from the first byte after the previous message (empty lines included) to the end
    /// of the next head: the time the header read timeout measures.
    pending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a head: empty lines are skipped, as hyper does.
    Between,
    /// Reading a head.
    Head,
    /// Reading a body of this many more bytes.
    Length(u64),
    /// Reading a chunked body.
    Chunked(Chunk),
    /// Not looking any more: see the module docs.
    Off,
}

/// Where a chunked body is, as hyper's decoder has it (`proto/h1/decode.rs`), so that both
/// find the same end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The first hex digit of a chunk size.
    Start,
    /// More hex digits of a size of this much so far.
    Size(u64),
    /// Blanks after the size.
    SizeBlank(u64),
    /// A chunk extension, up to CR.
    Extension(u64),
    /// The LF after a size line's CR.
    SizeLf(u64),
    /// Chunk data, this many bytes more.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: CR (the end) or a trailer field.
    EndCr,
    /// A trailer field, up to CR.
    Trailer,
    TrailerLf,
    /// The LF that ends the body.
    EndLf,
}

/// A refused head: its number on the connection (1 for the first request) and why.
pub(crate) type Refused = (u64, Refusal);

impl Scanner {
    pub(crate) fn new(max_head: usize, max_headers: usize) -> Self {
        Self {
            state: State::Between,
            head: Vec::new(),
            line_start: 0,
            bare_lf: false,
            max_head,
            max_headers,
            heads: 0,
            pending: false,
        }
    }

    /// A scanner that has followed `heads` heads and waits for the next: one made again for a
    /// connection that comes back from the parking lot (see [`Self::between_heads`]).
    pub(crate) fn resume(max_head: usize, max_headers: usize, heads: u64) -> Self {
        Self {
            heads,
            ..Self::new(max_head, max_headers)
        }
    }

    /// The heads followed, when the scanner holds nothing else: it waits for the next
    /// message, with nothing of it read. A scanner in that state can be dropped and made again
    /// by [`Self::resume`].
    pub(crate) fn between_heads(&self) -> Option<u64> {
        (self.state == State::Between && !self.pending && self.head.is_empty())
            .then_some(self.heads)
    }

    /// True from the first byte after the previous message (an empty line before the request
    /// line counts) to the end of the next head.
    pub(crate) fn in_head(&self) -> bool {
        self.pending && !self.is_off()
    }

    /// True once the scanner stopped looking.
    pub(crate) fn is_off(&self) -> bool {
        self.state == State::Off
    }

    /// Follows `bytes`, the next bytes read from the client. Returns the refused head, if one
    /// ended in them; the scanner then stops looking (the connection is closed after refusing).
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<Refused> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return None,
                State::Between => {
                    self.pending = true;
                    // Empty lines before a request line are skipped (RFC 9112 section 2.2).
                    let skip = bytes
                        .iter()
                        .position(|b| !matches!(b, b'\r' | b'\n'))
                        .unwrap_or(bytes.len());
                    bytes = &bytes[skip..];
                    if !bytes.is_empty() {
                        self.state = State::Head;
                    }
                }
                State::Head => {
                    let (used, ended) = self.take_head_bytes(bytes);
                    let (taken, rest) = bytes.split_at(used);
                    bytes = rest;
                    let length = self.head.len() + if ended { used } else { 0 };
                    if length > self.max_head {
                        self.off();
                        return Some((self.heads + 1, Refusal::HeadTooLarge));
                    }
                    if ended {
                        self.heads += 1;
                        self.pending = false;
                        if let Some(refusal) = self.judge_head(taken) {
                            self.off();
                            return Some((self.heads, refusal));
                        }
                    }
                }
                State::Length(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = match left - n {
                        0 => State::Between,
                        left => State::Length(left),
                    };
                }
                State::Chunked(Chunk::Data(left)) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = State::Chunked(match left - n {
                        0 => Chunk::DataCr,
                        left => Chunk::Data(left),
                    });
                }
                State::Chunked(chunk) => {
                    self.state = match step(chunk, bytes[0]) {
                        Some(Step::Next(chunk)) => State::Chunked(chunk),
                        Some(Step::Done) => State::Between,
                        None => State::Off,
                    };
                    bytes = &bytes[1..];
                }
            }
        }
        None
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
    }

    /// Follows the lines of the head being read in `bytes`, up to its end; returns how many
    /// bytes belong to the head and whether it ended there. An ended head's last bytes are left
    /// in `bytes` for [`judge_head`](Self::judge_head); an unfinished one is kept in `self.head`.
    /// Lines are found with `memchr`, so the cost goes with the number of lines more than with
    /// the number of bytes.
    fn take_head_bytes(&mut self, bytes: &[u8]) -> (usize, bool) {
        let held = self.head.len();
        let mut from = 0;
        for lf in memchr::memchr_iter(b'\n', bytes) {
            // The byte before the LF: the line's last, or, for an empty line, the LF before.
            let before = match lf {
                0 => self.head.last().copied(),
                _ => Some(bytes[lf - 1]),
            };
            let cr = before == Some(b'\r');
            self.bare_lf |= !cr;
            let line = held + lf - self.line_start;
            from = lf + 1;
            if line == 0 || (line == 1 && cr) {
                return (from, true);
            }
            self.line_start = held + from;
        }
        // Past the limit, the rest of the head is not kept.
        let room = (self.max_head + 1).saturating_sub(held + from);
        let take = (bytes.len() - from).min(room);
        self.head.extend_from_slice(&bytes[..from + take]);
        (from + take, false)
    }

    /// Judges the head that ends with `tail` (what came before it is in `self.head`), and sets
    /// the state to read its body (or to stop).
    fn judge_head(&mut self, tail: &[u8]) -> Option<Refusal> {
        self.line_start = 0;
        if std::mem::take(&mut self.bare_lf) {
            self.head.clear();
            return Some(Refusal::BareLf);
        }
        if self.head.is_empty() {
            return self.judge(tail);
        }
        let mut head = std::mem::take(&mut self.head);
        head.extend_from_slice(tail);
        let verdict = self.judge(&head);
        // Keep the allocation for the next head, unless a large head made it large: idle
        // connections should not each hold a head's worth of memory.
        if head.capacity() <= 4096 {
            self.head = head;
            self.head.clear();
        }
        verdict
    }

    /// Judges a whole head whose lines all end in CRLF.
    fn judge(&mut self, head: &[u8]) -> Option<Refusal> {
        // Uninitialised: httparse writes the fields it finds, and filling the whole array first
        // would cost more than parsing a short head.
        let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut heap = Vec::new();
        let fields = if self.max_headers <= storage.len() {
            &mut storage[..self.max_headers]
        } else {
            heap.reserve_exact(self.max_headers);
            &mut heap.spare_capacity_mut()[..self.max_headers]
        };
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, fields) {
            Ok(httparse::Status::Complete(_)) => {}
            // hyper answers `400` (or `431` for too many fields) and closes; HTTP/2's preface
            // ends here too.
            _ => {
                self.state = State::Off;
                return None;
            }
        }
        let http11 = req.version == Some(1);
        let mut lengths = 0;
        let mut length = None;
        let mut codings = 0;
        let mut chunked = false;
        let mut upgrade = false;
        for field in req.headers.iter() {
            if field.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = digits(field.value);
            } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
                codings += 1;
                chunked = trim(field.value).eq_ignore_ascii_case(b"chunked");
            } else if field.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if lengths > 0 && codings > 0 {
            return Some(Refusal::LengthAndChunked);
        }
        if lengths > 1 {
            return Some(Refusal::RepeatedLength);
        }
        if codings > 1 || (codings == 1 && !chunked) {
            return Some(Refusal::TransferCoding);
        }
        self.state = if req.method == Some("CONNECT") || (http11 && upgrade) || (!http11 && chunked)
        {
            // A tunnel may follow (or, for HTTP/1.0 with Transfer-Encoding, hyper's `400`).
            State::Off
        } else if chunked {
            State::Chunked(Chunk::Start)
        } else if lengths == 1 {
            match length {
                Some(0) => State::Between,
                Some(n) => State::Length(n),
                // hyper answers `400`.
                None => State::Off,
            }
        } else {
            State::Between
        };
        None
    }
}

/// A `Content-Length` value as hyper reads it: digits only, no sign, no list.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

enum Step {
    Next(Chunk),
    Done,
}

/// One byte of a chunked body outside chunk data. `None`: hyper fails the body here.
fn step(chunk: Chunk, b: u8) -> Option<Step> {
    let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
    let grow = |size: u64, digit: u64| size.checked_mul(16)?.checked_add(digit);
    Some(Step::Next(match chunk {
        Chunk::Start => Chunk::Size(hex(b)?),
        Chunk::Size(size) => match b {
            b'\t' | b' ' => Chunk::SizeBlank(size),
            b';' => Chunk::Extension(size),
            b'\r' => Chunk::SizeLf(size),
            _ => Chunk::Size(grow(size, hex(b)?)?),
        },
        Chunk::SizeBlank(size) => match b {
            b'\t' | b' ' => Chunk::SizeBlank(size),
            b';' => Chunk::Extension(size),
            b'\r' => Chunk::SizeLf(size),
            _ => return None,
        },
        Chunk::Extension(size) => match b {
            b'\r' => Chunk::SizeLf(size),
            b'\n' => return None,
            _ => Chunk::Extension(size),
        },
        Chunk::SizeLf(size) => match (b, size) {
            (b'\n', 0) => Chunk::EndCr,
            (b'\n', size) => Chunk::Data(size),
            _ => return None,
        },
        // Taken in bulk by the caller.
        Chunk::Data(_) => return None,
        Chunk::DataCr => match b {
            b'\r' => Chunk::DataLf,
            _ => return None,
        },
        Chunk::DataLf => match b {
            b'\n' => Chunk::Start,
            _ => return None,
        },
        Chunk::EndCr => match b {
            b'\r' => Chunk::EndLf,
            _ => Chunk::Trailer,
        },
        Chunk::Trailer => match b {
            b'\r' => Chunk::TrailerLf,
            _ => Chunk::Trailer,
        },
        Chunk::TrailerLf => match b {
            b'\n' => Chunk::EndCr,
            _ => return None,
        },
        Chunk::EndLf => match b {
            b'\n' => return Some(Step::Done),
            _ => return None,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        Scanner::new(8192, 100)
    }

    /// Feeds `input` whole, then byte by byte, and checks both give the same answer.
    fn scan(input: &[u8]) -> (Option<Refused>, Scanner) {
        let mut whole = scanner();
        let refused = whole.feed(input);
        let mut bytewise = scanner();
        let mut refused_bytewise = None;
        for b in input {
            refused_bytewise = refused_bytewise.or(bytewise.feed(std::slice::from_ref(b)));
        }
        assert_eq!(refused, refused_bytewise, "whole vs byte by byte");
        assert_eq!(whole.state, bytewise.state, "whole vs byte by byte");
        assert_eq!(whole.heads, bytewise.heads, "whole vs byte by byte");
        (refused, whole)
    }

    #[test]
    fn follows_keep_alive_requests_with_all_framings() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
            \r\n\
            POST /y HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  Chunked \r\n\r\n\
            5;ext=1\r\nhello\r\nA \r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n\
            GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        let (refused, scanner) = scan(input);
        assert_eq!(refused, None);
        assert_eq!(scanner.heads, 4);
        assert_eq!(scanner.state, State::Between);
    }

    #[test]
    fn refuses_smuggling_heads_by_number() {
        let first = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let cases: [(&[u8], Refusal); 6] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::LengthAndChunked,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
                Refusal::LengthAndChunked,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
                Refusal::RepeatedLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Refusal::TransferCoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Refusal::TransferCoding,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
                Refusal::BareLf,
            ),
        ];
        for (second, refusal) in cases {
            let input = [&first[..], second].concat();
            let (refused, scanner) = scan(&input);
            assert_eq!(
                refused,
                Some((2, refusal)),
                "{}",
                String::from_utf8_lossy(second)
            );
            assert!(scanner.is_off());
        }
    }

    #[test]
    fn a_bare_lf_ending_the_head_is_refused() {
        let (refused, _) = scan(b"GET / HTTP/1.1\r\nHost: a\r\n\n");
        assert_eq!(refused, Some((1, Refusal::BareLf)));
        let (refused, _) = scan(b"GET / HTTP/1.1\nHost: a\n\n");
        assert_eq!(refused, Some((1, Refusal::BareLf)));
    }

    #[test]
    fn chunk_data_is_not_read_as_a_head() {
        // The chunk's data looks like a request that would be refused.
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            37\r\nGET / HTTP/1.1\r\nContent-Length: 1\nContent-Length: 1\r\n\r\n\r\n0\r\n\r\n";
        let (refused, scanner) = scan(input);
        assert_eq!(refused, None);
        assert_eq!(scanner.heads, 1);
        assert_eq!(scanner.state, State::Between);
    }

    #[test]
    fn stops_where_hyper_fails_or_a_tunnel_may_follow() {
        for input in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\nb",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        ] {
            let (refused, scanner) = scan(input);
            assert_eq!(refused, None, "{}", String::from_utf8_lossy(input));
            assert!(scanner.is_off(), "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn too_long_heads_are_refused_and_too_many_fields_left_to_hyper() {
        let mut long = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(9000, b'a');
        let (refused, s) = scan(&long);
        assert_eq!(refused, Some((2, Refusal::HeadTooLarge)));
        assert!(s.is_off());
        // A whole head just over the limit, and one at it.
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(8192 - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        let (refused, _) = scan(&head);
        assert_eq!(refused, None);
        head.insert(20, b'a');
        let (refused, _) = scan(&head);
        assert_eq!(refused, Some((1, Refusal::HeadTooLarge)));

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("X-{i}: a\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut s = scanner();
        assert_eq!(s.feed(&many), None);
        assert!(s.is_off());
    }

    #[test]
    fn knows_when_a_head_is_being_read() {
        let mut s = scanner();
        assert!(!s.in_head());
        s.feed(b"\r\n");
        assert!(s.in_head(), "empty lines before a head start its time");
        s.feed(b"GET / HT");
        assert!(s.in_head());
        s.feed(b"TP/1.1\r\nHost: a\r\n\r");
        assert!(s.in_head());
        s.feed(b"\n");
        assert!(!s.in_head());
        s.feed(b"P");
        assert!(s.in_head(), "the next head has begun");
    }
}
