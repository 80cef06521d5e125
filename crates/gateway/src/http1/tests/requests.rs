//! Request streams for the differential cases: well-formed requests, requests whose framing
//! is ambiguous in the ways smuggling uses (lengths repeated, conflicting, signed or listed;
//! `Transfer-Encoding` spelled oddly or beside a length), obs-fold, bare LF, NUL, oversize
//! heads and bodies, several pipelined, then byte mutations and random cuts.

use proptest::prelude::*;

use super::MAX_BODY;

/// How a request says where its body ends.
#[derive(Debug, Clone)]
pub enum Framing {
    /// No field: no body (what is sent after the head is the next request).
    None,
    /// `Content-Length` of the body's size, spelled as given (`{}` is the length).
    Length { name: &'static str, value: &'static str },
    /// A `Content-Length` off by `delta` bytes.
    WrongLength(i64),
    /// Two `Content-Length` fields, the second `delta` off.
    TwoLengths(i64),
    /// `Transfer-Encoding` spelled as given, the body chunked in pieces of `chunk` bytes.
    Chunked { name: &'static str, value: &'static str, chunk: usize, ext: bool, trailer: bool },
    /// Both: chunked, and a `Content-Length` of the body's size (or of the chunked bytes).
    ChunkedAndLength { value: &'static str, length_first: bool, of_chunked: bool },
    /// A coding that is not chunked: hyper refuses such a request.
    OtherCoding(&'static str),
}

/// One request of a stream.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub target: String,
    pub version: &'static str,
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Lines end with a bare LF instead of CRLF.
    pub bare_lf: bool,
    /// The field at this index (of `fields`) is continued on a second line (obs-fold).
    pub fold: Option<usize>,
}

// Each part of a request is usually ordinary and sometimes odd, so that most requests get
// served and most streams carry one oddity among ordinary requests.

const METHODS: &[&str] = &["GET", "POST", "HEAD", "PUT", "PATCH", "DELETE"];

const ODD_METHODS: &[&str] = &["OPTIONS", "CONNECT", "get", "X-Y", "G\0T"];

const TARGETS: &[&str] = &["/", "/api/ping", "/api/products?q=green%20tea&limit=3", "/a/b/../c", "/a?x=1&x=2;y"];

const ODD_TARGETS: &[&str] = &[
    "/a#frag",
    "/a?b#c",
    "//double",
    "/{braces}|pipe^`",
    "/\"quoted\"<>\\",
    "/a?q=\"x\"",
    "/%00",
    "/a\0b",
    "/caf\u{e9}",
    "*",
    "http://example.com/a",
    "example.com:443",
];

const ODD_VERSIONS: &[&str] = &["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 ", "HTTP/1"];

const LENGTH_NAMES: &[&str] = &["Content-Length", "content-length", "CONTENT-LENGTH", "Content-length"];

/// `{}` is the body's length.
const ODD_LENGTH_VALUES: &[&str] =
    &[" {}", "{} ", "\t{}", "0{}", "+{}", "{}, {}", "{},{}", "{}, 0", "-{}", "{}\0", "0x{}"];

const CODING_NAMES: &[&str] = &["Transfer-Encoding", "transfer-encoding", "TRANSFER-ENCODING", "Transfer-encoding"];

const ODD_CODING_NAMES: &[&str] =
    &["Transfer_Encoding", "Transfer-Encoding\t", "X-Transfer-Encoding", "Transfer-Encodin"];

const CODING_VALUES: &[&str] = &["chunked", "Chunked", "CHUNKED", "gzip, chunked"];

const ODD_CODING_VALUES: &[&str] = &[
    " chunked",
    "chunked ",
    "chunked, gzip",
    "chunked, chunked",
    "identity, chunked",
    ",chunked",
    "chunked,",
    "chunked;q=1",
    "\tchunked",
    "xchunked",
    "chunk",
    "\"chunked\"",
    "chunked\0",
];

const OTHER_CODINGS: &[&str] = &["gzip", "identity", "deflate", ""];

/// Fields besides the framing: ordinary ones, then the ones the gateway's own server judges
/// and the malformed.
const FIELDS: &[(&str, &str)] = &[
    ("Host", "example.com"),
    ("host", "a"),
    ("Accept", "*/*"),
    ("x-a", "1"),
    ("Connection", "keep-alive"),
    ("x-forwarded-for", "203.0.113.9"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
];

const ODD_FIELDS: &[(&str, &str)] = &[
    ("Connection", "close"),
    ("connection", "Keep-Alive, close"),
    ("Connection", "upgrade"),
    ("Connection", "x-hop"),
    ("Connection", ""),
    ("Upgrade", "websocket"),
    ("Expect", "100-continue"),
    ("Expect", "nothing"),
    ("x-empty", ""),
    ("x-utf8", "caf\u{e9}"),
    ("x_underscore", "1"),
    ("TE", "trailers"),
    ("x-nul", "a\0b"),
    ("x-cr", "a\rb"),
    ("bad name", "1"),
    ("x-colon:", "1"),
    (" x-leading-space", "1"),
];

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(items)
}

/// Mostly one of `usual`, sometimes one of `odd`.
fn usually<T: Clone + std::fmt::Debug + 'static>(
    usual: &'static [T],
    odd: &'static [T],
) -> impl Strategy<Value = T> + Clone {
    prop_oneof![8 => proptest::sample::select(usual), 1 => proptest::sample::select(odd)]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => proptest::collection::vec(any::<u8>(), 0..64),
        // A body that is a request: what a desync would serve.
        3 => Just(b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        1 => (MAX_BODY - 2..=MAX_BODY + 2).prop_map(|len| vec![b'b'; len]),
    ]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        3 => Just(Framing::None),
        8 => (pick(LENGTH_NAMES), usually(&["{}"], ODD_LENGTH_VALUES))
            .prop_map(|(name, value)| Framing::Length { name, value }),
        1 => (-3i64..=3).prop_map(Framing::WrongLength),
        1 => (-1i64..=1).prop_map(Framing::TwoLengths),
        3 => (usually(CODING_NAMES, ODD_CODING_NAMES), usually(CODING_VALUES, ODD_CODING_VALUES), 1usize..40, any::<bool>(), any::<bool>())
            .prop_map(|(name, value, chunk, ext, trailer)| Framing::Chunked { name, value, chunk, ext, trailer }),
        2 => (usually(CODING_VALUES, ODD_CODING_VALUES), any::<bool>(), any::<bool>()).prop_map(|(value, length_first, of_chunked)| {
            Framing::ChunkedAndLength { value, length_first, of_chunked }
        }),
        1 => pick(OTHER_CODINGS).prop_map(Framing::OtherCoding),
    ]
}

fn fields() -> impl Strategy<Value = Vec<(String, String)>> {
    let field = usually(FIELDS, ODD_FIELDS).prop_map(|(name, value)| (name.to_owned(), value.to_owned()));
    prop_oneof![
        40 => proptest::collection::vec(field, 0..5),
        // Around the 32 fields the gateway's server takes, and hyper's 100.
        1 => (30usize..34).prop_map(|n| (0..n).map(|i| (format!("x-f{i}"), i.to_string())).collect()),
        1 => (99usize..102).prop_map(|n| (0..n).map(|i| (format!("x-f{i}"), i.to_string())).collect()),
        // A head around the gateway's 64 KiB read limit.
        1 => (65_400usize..65_600).prop_map(|n| vec![("x-big".to_owned(), "v".repeat(n))]),
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        40 => usually(TARGETS, ODD_TARGETS).prop_map(str::to_owned),
        // Around hyper's longest target (65 534 bytes).
        1 => (65_530usize..65_540).prop_map(|n| format!("/{}", "t".repeat(n - 1))),
    ]
}

/// Any request, usually an ordinary one.
pub fn request() -> impl Strategy<Value = Request> {
    (
        usually(METHODS, ODD_METHODS),
        target(),
        usually(&["HTTP/1.1"], ODD_VERSIONS),
        fields(),
        body(),
        framing(),
        proptest::bool::weighted(0.05),
        proptest::option::weighted(0.03, 0usize..5),
    )
        .prop_map(|(method, target, version, fields, body, framing, bare_lf, fold)| Request {
            method,
            target,
            version,
            fields,
            body,
            framing,
            bare_lf,
            fold,
        })
}

/// A plain request of the kind the gateway's own server takes: HTTP/1.1, origin form, one
/// `Content-Length` or none, nothing for hyper to judge.
pub fn plain_request() -> impl Strategy<Value = Request> {
    let field = pick(FIELDS).prop_map(|(name, value)| (name.to_owned(), value.to_owned()));
    let fields = proptest::collection::vec(field, 0..4);
    let body = proptest::collection::vec(any::<u8>(), 0..200);
    let framing =
        prop_oneof![Just(Framing::None), pick(LENGTH_NAMES).prop_map(|name| Framing::Length { name, value: "{}" })];
    (pick(METHODS), pick(TARGETS), fields, body, framing, proptest::bool::weighted(0.1)).prop_map(
        |(method, target, fields, body, framing, bare_lf)| {
            let body = if matches!(framing, Framing::None) { Vec::new() } else { body };
            Request {
                method,
                target: target.to_owned(),
                version: "HTTP/1.1",
                fields,
                body,
                framing,
                bare_lf,
                fold: None,
            }
        },
    )
}

impl Request {
    /// The request on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let eol: &[u8] = if self.bare_lf { b"\n" } else { b"\r\n" };
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(format!("{} {} {}", self.method, self.target, self.version).as_bytes());
        out.extend_from_slice(eol);
        let field = |out: &mut Vec<u8>, name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(eol);
        };
        for (i, (name, value)) in self.fields.iter().enumerate() {
            if self.fold == Some(i) {
                field(&mut out, name, value);
                // obs-fold: a line that starts with whitespace continues the field above.
                out.extend_from_slice(b" folded");
                out.extend_from_slice(eol);
            } else {
                field(&mut out, name, value);
            }
        }
        let len = self.body.len();
        let body = match &self.framing {
            Framing::None => Vec::new(),
            Framing::Length { name, value } => {
                field(&mut out, name, &value.replace("{}", &len.to_string()));
                self.body.clone()
            }
            Framing::WrongLength(delta) => {
                field(&mut out, "Content-Length", &offset(len, *delta));
                self.body.clone()
            }
            Framing::TwoLengths(delta) => {
                field(&mut out, "Content-Length", &len.to_string());
                field(&mut out, "Content-Length", &offset(len, *delta));
                self.body.clone()
            }
            Framing::Chunked { name, value, chunk, ext, trailer } => {
                field(&mut out, name, value);
                chunked(&self.body, *chunk, *ext, *trailer)
            }
            Framing::ChunkedAndLength { value, length_first, of_chunked } => {
                let body = chunked(&self.body, 7, false, false);
                let length = if *of_chunked { body.len() } else { len };
                if *length_first {
                    field(&mut out, "Content-Length", &length.to_string());
                    field(&mut out, "Transfer-Encoding", value);
                } else {
                    field(&mut out, "Transfer-Encoding", value);
                    field(&mut out, "Content-Length", &length.to_string());
                }
                body
            }
            Framing::OtherCoding(coding) => {
                field(&mut out, "Transfer-Encoding", coding);
                self.body.clone()
            }
        };
        out.extend_from_slice(eol);
        out.extend_from_slice(&body);
        out
    }
}

fn offset(len: usize, delta: i64) -> String {
    (i64::try_from(len).unwrap_or(i64::MAX) + delta).to_string()
}

/// `body` chunked in pieces of `size` bytes, with chunk extensions and a trailer if asked.
fn chunked(body: &[u8], size: usize, ext: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}", piece.len()).as_bytes());
        if ext {
            out.extend_from_slice(b";name=value");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"x-trailer: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A change to an encoded stream.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Overwrite the byte at (a position scaled to the stream's length) with one of the bytes
    /// that delimit HTTP/1.1 or that parsers trip on.
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    /// Cut the stream short here.
    Truncate(prop::sample::Index),
}

const SPECIAL: &[u8] = b"\r\n\0 \t:;,-0123456789abcdef\x7f\x80\xff\x0bGHPT/";

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<prop::sample::Index>(), pick(SPECIAL)).prop_map(|(at, b)| Mutation::Set(at, b)),
        3 => (any::<prop::sample::Index>(), pick(SPECIAL)).prop_map(|(at, b)| Mutation::Insert(at, b)),
        2 => any::<prop::sample::Index>().prop_map(Mutation::Remove),
        1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

impl Mutation {
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        match self {
            Mutation::Set(at, b) => {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            Mutation::Insert(at, b) => bytes.insert(at.index(bytes.len() + 1), *b),
            Mutation::Remove(at) => {
                bytes.remove(at.index(bytes.len()));
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len())),
        }
    }
}

/// A stream: its requests, the mutations made to their bytes, and where it is cut into the
/// pieces written one after another.
#[derive(Debug, Clone)]
pub struct Stream {
    pub requests: Vec<Request>,
    pub mutations: Vec<Mutation>,
    pub cuts: Vec<prop::sample::Index>,
}

impl Stream {
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes: Vec<u8> = self.requests.iter().flat_map(Request::encode).collect();
        for mutation in &self.mutations {
            mutation.apply(&mut bytes);
        }
        bytes
    }

    pub fn pieces(&self) -> Vec<Vec<u8>> {
        let bytes = self.bytes();
        let mut at: Vec<usize> = self.cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.dedup();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }
}

/// A stream of `1..=4` requests drawn from `request`, mutated in `mutated_percent` of cases.
pub fn stream(request: impl Strategy<Value = Request>, mutated_percent: u32) -> impl Strategy<Value = Stream> {
    let mutations = match mutated_percent {
        0 => Just(Vec::new()).boxed(),
        _ => prop_oneof![
            100 - mutated_percent.min(100) => Just(Vec::new()),
            mutated_percent.min(100) => proptest::collection::vec(mutation(), 1..4),
        ]
        .boxed(),
    };
    (
        proptest::collection::vec(request, 1..=4),
        mutations,
        proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    )
        .prop_map(|(requests, mutations, cuts)| Stream { requests, mutations, cuts })
}
