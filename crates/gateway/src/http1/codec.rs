//! The HTTP/1.1 wire rules both sides share: how a message's body is framed (requests the
//! server takes, responses the client reads), which fields belong to one hop, and how heads
//! are written.

use http::StatusCode;
use http::header::{self, HeaderMap};

/// Largest request body the server takes itself; a larger one goes to hyper, which streams it.
pub const MAX_BODY: usize = 64 * 1024;

/// Most header fields of a request the server takes itself (hyper takes up to 100).
pub const MAX_FIELDS: usize = 32;

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus `proxy-connection`
/// which old clients still send.
/// Lowercase, as `HeaderMap` keeps names; compared as strings, which costs less per field
/// than going through `HeaderName`.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Whether a field named `name` (any case) is one of [`HOP_BY_HOP`].
#[inline]
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
}

/// The comma-separated tokens of a header value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii)
}

/// Longest request target served here: hyper answers a longer one with 414.
const MAX_TARGET: usize = u16::MAX as usize - 1;

/// Whether `b` may stand anywhere in a target served here: visible ASCII that hyper's URI
/// parser takes in both path and query. Anything else is hyper's to judge (it refuses `<`,
/// `>`, and `` ` `` or `"` in one of the parts with a 400, and drops a `#` fragment, so
/// routing here on `/a#b` would not find `/a`).
#[inline]
fn is_target_byte(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'`')
}

/// What a plain request's head says about its framing: the requests the server takes itself
/// are HTTP/1.1, not `CONNECT`, in origin form with a target hyper takes as it is, with a body
/// of at most [`MAX_BODY`] bytes framed by a single `Content-Length`, no `Transfer-Encoding`,
/// `Expect` or `Upgrade`, and a `Connection` of `keep-alive` or `close`. Everything else is
/// hyper's to frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain {
    pub body_len: usize,
    /// The client asked for the connection to close after this exchange.
    pub close: bool,
}

impl Plain {
    /// `None` when the request is not plain.
    pub fn of(parsed: &httparse::Request<'_, '_>) -> Option<Self> {
        // A 2xx to CONNECT turns the connection into a tunnel: what follows is not requests.
        if parsed.version != Some(1) || parsed.method == Some("CONNECT") {
            return None;
        }
        let target = parsed.path?.as_bytes();
        if target.first() != Some(&b'/') || target.len() > MAX_TARGET || !target.iter().all(|b| is_target_byte(*b)) {
            return None;
        }
        let mut body_len = None;
        let mut close = false;
        for field in parsed.headers.iter() {
            let name = field.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                // One field of digits only: a repeated or signed length is how smuggling starts.
                let digits = field.value.trim_ascii();
                if body_len.is_some()
                    || digits.is_empty()
                    || digits.len() > 19
                    || !digits.iter().all(u8::is_ascii_digit)
                {
                    return None;
                }
                body_len = std::str::from_utf8(digits).ok()?.parse::<usize>().ok();
                body_len?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
            {
                return None;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(field.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // Fields named hop-by-hop by the client: hyper's path strips them.
                        return None;
                    }
                }
            }
        }
        let body_len = body_len.unwrap_or(0);
        (body_len <= MAX_BODY).then_some(Self { body_len, close })
    }
}

/// Where the reading of a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Done,
    /// Bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// No length given: the body ends with the connection.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes of the current chunk still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

impl Framing {
    pub fn is_done(self) -> bool {
        self == Self::Done
    }

    /// RFC 9112 §6.3: how long a response body is, from the raw header fields; `head` says
    /// the request was a `HEAD`. The error names what is malformed.
    pub fn of_response(head: bool, status: StatusCode, fields: &[httparse::Header<'_>]) -> Result<Self, &'static str> {
        if head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Self::Done);
        }
        let mut coding = None;
        let mut length: Option<&[u8]> = None;
        for field in fields {
            if field.name.eq_ignore_ascii_case("transfer-encoding") {
                coding = tokens(field.value).last().or(coding);
            } else if field.name.eq_ignore_ascii_case("content-length") {
                let value = field.value.trim_ascii();
                if length.is_some_and(|seen| seen != value) {
                    return Err("conflicting content-length");
                }
                length = Some(value);
            }
        }
        if let Some(coding) = coding {
            return Ok(if coding.eq_ignore_ascii_case(b"chunked") {
                Self::Chunked(Chunk::Size)
            } else {
                Self::UntilClose
            });
        }
        let Some(length) = length else { return Ok(Self::UntilClose) };
        // Digits only: `str::parse` would also take a sign.
        let digits = !length.is_empty() && length.iter().all(u8::is_ascii_digit);
        let length = std::str::from_utf8(length).ok().filter(|_| digits).and_then(|v| v.parse().ok());
        match length.ok_or("invalid content-length")? {
            0 => Ok(Self::Done),
            left => Ok(Self::Length(left)),
        }
    }
}

/// `1a3f` or `1a3f;name=value`, as in a chunk-size line.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err("invalid chunk size");
    }
    digits.iter().try_fold(0u64, |size, digit| {
        let nibble = char::from(*digit).to_digit(16).ok_or("invalid chunk size")?;
        Ok(size << 4 | u64::from(nibble))
    })
}

/// Writes one header field line. Inlined: a call per field cost more than the copies.
#[inline]
pub fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes an HTTP/1.1 status line with the status's canonical reason.
pub fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the head the client receives for an upstream response with `fields`: HTTP/1.1,
/// without hop-by-hop fields (and those `Connection` names), with the body framed by length
/// when the upstream gave one and chunked otherwise, and `connection: close` when `close`.
pub fn encode_client_head(
    status: StatusCode,
    fields: &[httparse::Header<'_>],
    framing: Framing,
    close: bool,
    out: &mut Vec<u8>,
) {
    let rechunked = matches!(framing, Framing::Chunked(_) | Framing::UntilClose);
    write_status_line(out, status);
    let named = fields.iter().filter(|f| f.name.eq_ignore_ascii_case("connection")).flat_map(|f| tokens(f.value));
    let named: Vec<&[u8]> = named.collect();
    for field in fields {
        let name = field.name.as_bytes();
        let dropped = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"upgrade")
            || (rechunked && name.eq_ignore_ascii_case(b"content-length"))
            || named.iter().any(|token| name.eq_ignore_ascii_case(token));
        if !dropped {
            write_field(out, name, field.value);
        }
    }
    if rechunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The head of a response made by the gateway itself, whose body of `len` bytes follows;
/// `date` added as hyper adds it.
pub fn encode_local_head(status: StatusCode, headers: &HeaderMap, len: usize, close: bool, out: &mut Vec<u8>) {
    write_status_line(out, status);
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        write_field(out, b"content-length", len.to_string().as_bytes());
    }
    if !headers.contains_key(header::DATE) {
        write_field(out, b"date", httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn plain(raw: &[u8]) -> Option<(usize, bool)> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Request::new(&mut fields);
        assert!(matches!(parsed.parse(raw), Ok(httparse::Status::Complete(_))), "{}", String::from_utf8_lossy(raw));
        Plain::of(&parsed).map(|p| (p.body_len, p.close))
    }

    #[test]
    fn only_plain_http_1_1_requests_are_served_here() {
        assert_eq!(plain(b"GET /a?b=c HTTP/1.1\r\nhost: x\r\n\r\n"), Some((0, false)));
        assert_eq!(
            plain(b"POST /a HTTP/1.1\r\nContent-Length: 12\r\nConnection: Keep-Alive, close\r\n\r\n"),
            Some((12, true))
        );
        for unfit in [
            &b"GET /a HTTP/1.0\r\n\r\n"[..],
            b"GET http://x/a HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
            b"POST /a HTTP/1.1\r\ncontent-length: 65537\r\n\r\n",
            b"POST /a HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"GET /a HTTP/1.1\r\nconnection: x-private\r\nx-private: 1\r\n\r\n",
            b"GET /a#frag HTTP/1.1\r\n\r\n",
            b"GET /a<b> HTTP/1.1\r\n\r\n",
            b"GET /a?q=\"x\" HTTP/1.1\r\n\r\n",
            b"GET /a`b HTTP/1.1\r\n\r\n",
            b"CONNECT / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(plain(unfit), None, "{}", String::from_utf8_lossy(unfit));
        }
        assert_eq!(plain(b"POST /a HTTP/1.1\r\ncontent-length: 65536\r\n\r\n"), Some((MAX_BODY, false)));
        let longest = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET - 1));
        assert_eq!(plain(longest.as_bytes()), Some((0, false)));
        let too_long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
        assert_eq!(plain(too_long.as_bytes()), None);
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(parse_chunk_size(b"1a").ok(), Some(26));
        assert_eq!(parse_chunk_size(b"FF;name=value").ok(), Some(255));
        assert_eq!(parse_chunk_size(b"0").ok(), Some(0));
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"xyz").is_err());
        assert!(parse_chunk_size(b"10000000000000000").is_err());
    }

    #[test]
    fn a_local_answer_carries_its_length_and_date_and_closes_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let mut out = Vec::new();
        encode_local_head(StatusCode::NOT_FOUND, &headers, 17, true, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with(
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 17\r\ndate: "
            ),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\nconnection: close\r\n\r\n"), "{text}");
        assert!(!text.contains("999"), "{text}");
    }
}
