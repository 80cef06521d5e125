//! The properties: on any byte stream the gateway's server and hyper's serve the same
//! requests and frame the same answers; a request hidden in a body is never served unless
//! hyper serves it; plain requests are the gateway's own to serve.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

use super::requests::{self, Stream};
use super::{By, Served, Server, cases, feed, responses};

fn config() -> Config {
    // Failures are kept as named regression tests below, not in a file beside the source.
    Config { cases: cases(), failure_persistence: None, ..Config::default() }
}

fn runtime() -> tokio::runtime::Runtime {
    // Paused time: a server that waits on a timer (a head or body never completed) is woken
    // at once instead of after seconds.
    match tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build() {
        Ok(rt) => rt,
        Err(err) => panic!("a test runtime: {err}"),
    }
}

/// Both servers on the same pieces.
fn run_both(rt: &tokio::runtime::Runtime, pieces: &[Vec<u8>]) -> (Served, Served) {
    rt.block_on(async {
        let gateway = feed(Server::Gateway, pieces).await;
        let hyper = feed(Server::Hyper, pieces).await;
        (gateway, hyper)
    })
}

/// `bytes` escaped, runs of one byte shortened (`b×65536`).
fn shown(bytes: &[u8]) -> String {
    let mut text = String::new();
    let mut rest = bytes;
    while let Some(&first) = rest.first() {
        let run = rest.iter().take_while(|b| **b == first).count();
        if run > 16 {
            text.push_str(&format!("{}×{run}", [first].escape_ascii()));
        } else {
            text.push_str(&rest[..run].escape_ascii().to_string());
        }
        rest = &rest[run..];
    }
    text
}

/// The gateway served what hyper served, request for request, and its answers are framed as
/// hyper's are.
fn agree(pieces: &[Vec<u8>], gateway: &Served, hyper: &Served) -> Result<(), TestCaseError> {
    let context = || {
        format!(
            "stream: {}\n gateway served: {:?}\n hyper served:   {:?}\n gateway wrote: {}\n hyper wrote:   {}",
            pieces.iter().map(|piece| shown(piece)).collect::<Vec<_>>().join(" | "),
            gateway.requests.iter().map(ToString::to_string).collect::<Vec<_>>(),
            hyper.requests.iter().map(ToString::to_string).collect::<Vec<_>>(),
            shown(&gateway.output),
            shown(&hyper.output),
        )
    };
    prop_assert!(gateway.requests == hyper.requests, "the servers saw different requests\n{}", context());
    let methods: Vec<&str> = gateway.requests.iter().map(|seen| seen.method.as_str()).collect();
    let ours = responses(&gateway.output, &methods);
    let theirs = responses(&hyper.output, &methods);
    let ours = match ours {
        Ok(ours) => ours,
        Err((why, _)) => return Err(TestCaseError::fail(format!("the gateway wrote {why}\n{}", context()))),
    };
    let theirs = match theirs {
        Ok(theirs) => theirs,
        Err((why, _)) => return Err(TestCaseError::fail(format!("hyper wrote {why}\n{}", context()))),
    };
    // The answers to the requests served are the same. After them, a stream that ends in a
    // request refused or cut short may get a refusal from one server and none from the other:
    // whether hyper answers 400 to a head it cannot parse or just closes depends on how the
    // bytes reached it (the gateway hands over all it read at once), and a body cut short is
    // answered by the handler's 400 on hyper's side and by a close on the gateway's. Either
    // way no request is served, and nothing follows.
    let served = gateway.requests.len();
    prop_assert!(
        ours.get(..served) == theirs.get(..served),
        "the answers differ: {ours:?} vs {theirs:?}\n{}",
        context()
    );
    for tail in [&ours[served.min(ours.len())..], &theirs[served.min(theirs.len())..]] {
        prop_assert!(
            tail.len() <= 1 && tail.iter().all(|answer| answer.status >= 400),
            "more than a refusal after the requests served: {tail:?}\n{}",
            context()
        );
    }
    Ok(())
}

fn check(rt: &tokio::runtime::Runtime, stream: &Stream) -> Result<(Served, Served), TestCaseError> {
    let pieces = stream.pieces();
    let (gateway, hyper) = run_both(rt, &pieces);
    agree(&pieces, &gateway, &hyper)?;
    Ok((gateway, hyper))
}

#[test]
fn the_gateway_and_hyper_serve_the_same_requests_from_any_stream() {
    let rt = runtime();
    proptest!(config(), |(stream in requests::stream(requests::request(), 35))| {
        check(&rt, &stream)?;
    });
}

#[test]
fn a_request_hidden_in_a_body_is_never_served_unless_hyper_serves_it() {
    let rt = runtime();
    let smuggler = requests::request().prop_map(|mut req| {
        req.method = "POST";
        req.body = b"GET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        req
    });
    proptest!(config(), |(stream in requests::stream(smuggler, 20))| {
        let (gateway, hyper) = check(&rt, &stream)?;
        let smuggled = |served: &Served| served.requests.iter().filter(|seen| seen.target == "/smuggled").count();
        prop_assert!(smuggled(&gateway) <= smuggled(&hyper));
    });
}

#[test]
fn plain_requests_are_served_by_the_gateway_itself_and_framed_as_hyper_frames_them() {
    let rt = runtime();
    proptest!(config(), |(stream in requests::stream(requests::plain_request(), 0))| {
        let (gateway, _) = check(&rt, &stream)?;
        prop_assert_eq!(gateway.requests.len(), stream.requests.len());
        prop_assert!(gateway.by.iter().all(|by| *by == By::Own), "{:?}", gateway.by);
    });
}

/// Found by the differential run: the gateway served these targets itself, as sent, where
/// hyper drops the fragment (`/a`) or refuses the target (400).
#[test]
fn a_target_hyper_trims_or_refuses_is_judged_by_hyper() {
    let rt = runtime();
    for target in ["/a#frag", "/a?b#c", "/{braces}|pipe^`", "/a<b>", "/a?q=\"x\""] {
        let pieces = vec![format!("GET {target} HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n").into_bytes()];
        let (gateway, hyper) = run_both(&rt, &pieces);
        if let Err(err) = agree(&pieces, &gateway, &hyper) {
            panic!("{err}");
        }
        assert!(gateway.by.first().is_none_or(|by| *by == By::Hyper), "{target}: {:?}", gateway.by);
    }
}

/// Found by the differential run: the gateway served `CONNECT /` as any request and read
/// what followed as the next one, where hyper, having answered 200, tunnels it: two requests
/// where hyper saw one.
#[test]
fn what_follows_a_connect_is_never_served_as_a_request_unless_hyper_serves_it() {
    let rt = runtime();
    let pieces = vec![b"CONNECT / HTTP/1.1\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".to_vec()];
    let (gateway, hyper) = run_both(&rt, &pieces);
    if let Err(err) = agree(&pieces, &gateway, &hyper) {
        panic!("{err}");
    }
    assert_eq!(gateway.requests.len(), 1);
}

/// Found by the differential run: the head fit the read buffer and the body did not, so the
/// connection was closed without an answer.
#[test]
fn a_request_whose_head_and_body_outgrow_the_read_buffer_is_served_by_hyper() {
    let rt = runtime();
    let head =
        format!("POST /{} HTTP/1.1\r\nx-big: {}\r\nContent-Length: 18\r\n\r\n", "t".repeat(65_530), "v".repeat(65_478));
    let pieces = vec![[head.as_bytes(), &[0u8; 18][..]].concat()];
    let (gateway, hyper) = run_both(&rt, &pieces);
    if let Err(err) = agree(&pieces, &gateway, &hyper) {
        panic!("{err}");
    }
    assert_eq!(gateway.by, [By::Hyper]);
}
