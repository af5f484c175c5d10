//! Property tests of the streaming scrubber: for random real values, random splits into chunks and
//! every routine encoding (and masked echoes, and base64 wrapped across lines at MIME's, PEM's and
//! GitHub's widths with raw and JSON-escaped line breaks), what comes out never holds the encoded
//! real value and holds the same encoding of the stub in its place.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;

use super::encodings::{self, Alphabet, Encoding, End};
use super::rewrite::Substitutions;

/// Streams `input` through `subs` in chunks of the given sizes (cycled), alternately copied and
/// shared ([`Substitutions::push`], [`Substitutions::push_bytes`]), checking the bound on what is
/// held back after every chunk.
fn stream(subs: &Substitutions, input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut carry = Vec::new();
    let mut at = 0;
    for (i, &size) in sizes.iter().cycle().enumerate() {
        if at >= input.len() {
            break;
        }
        let end = (at + size).min(input.len());
        if i % 2 == 0 {
            subs.push(&mut carry, &input[at..end], &mut out);
        } else {
            let chunk = hyper::body::Bytes::copy_from_slice(&input[at..end]);
            for part in subs.push_bytes(&mut carry, chunk) {
                out.extend_from_slice(&part);
            }
        }
        assert!(carry.len() < subs.longest().max(1), "held {} bytes", carry.len());
        at = end;
    }
    subs.finish(&mut carry, &mut out);
    out
}

/// `text` without the line breaks `eol`.
fn unwrap_lines(text: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(eol) {
            i += eol.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Real values: token-like, without `x`, `.` or `*` (so a mask run is never part of one) and without
/// the surrounding text's characters.
fn real() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop::sample::select(b"ABCDEFGHIJKLMNOPQRSTUVWabcdefghijklmnopqrstuvw0123456789_-+/=~".to_vec()),
        1..48,
    )
}

fn stub() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop::sample::select(b"0123456789abcdef".to_vec()), 8..24)
        .prop_map(|hex| [b"stub_key_".to_vec(), hex].concat())
}

/// Text around an encoded value: characters no encoding of a real value uses.
fn text() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop::sample::select(b" \n{}:,<>\"#".to_vec()), 0..40)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_encoding_of_a_real_value_becomes_the_stub_in_place(
        real in real(),
        stub in stub(),
        before in text(),
        after in text(),
        which in 0usize..64,
        sizes in sizes(),
    ) {
        let all: Vec<Encoding> = Encoding::all()
            .into_iter()
            .filter(|e| !matches!(e, Encoding::Base64 { .. }))
            .collect();
        let encoding = all[which % all.len()];
        let pairs = encodings::pairs(&real, &stub);
        let encoded = encoding.encode(&real).expect("token-like values encode every way");
        // A stub that holds the encoded value (a one-character value, say) puts it back by design.
        prop_assume!(!contains(&stub, &encoded));
        // The replacement is the one paired with this needle (equal forms share the first's).
        let Some((_, replacement)) = pairs.iter().find(|(n, _)| *n == encoded) else {
            // Only values too short for encoded forms have no pair for it.
            prop_assert!(real.len() < encodings::MIN_ENCODED_LEN);
            return Ok(());
        };
        let subs = Substitutions::scrubbing([(&real, &stub)], Vec::new());
        let input = [before.clone(), encoded.clone(), after.clone()].concat();
        let out = stream(&subs, &input, &sizes);
        prop_assert_eq!(out.clone(), [before, replacement.clone(), after].concat(), "{:?}", encoding);
        prop_assert!(!contains(&out, &encoded));
    }

    #[test]
    fn base64_of_a_real_value_anywhere_in_a_blob_loses_it(
        real in real().prop_filter("long enough to encode", |r| r.len() >= encodings::MIN_ENCODED_LEN),
        stub in stub(),
        before in proptest::collection::vec(any::<u8>(), 0..20),
        after in proptest::collection::vec(any::<u8>(), 0..20),
        engine in 0usize..4,
        sizes in sizes(),
    ) {
        let (engine, alphabet) = [
            (&STANDARD, Alphabet::Standard),
            (&STANDARD_NO_PAD, Alphabet::Standard),
            (&URL_SAFE, Alphabet::UrlSafe),
            (&URL_SAFE_NO_PAD, Alphabet::UrlSafe),
        ][engine];
        let offset = (before.len() % 3) as u8;
        let blob = engine.encode([before.clone(), real.clone(), after].concat()).into_bytes();
        let subs = Substitutions::scrubbing([(&real, &stub)], Vec::new());
        let out = stream(&subs, &blob, &sizes);
        for offset in 0..3 {
            let middle = Encoding::Base64 { alphabet, offset, end: End::Middle }.encode(&real).unwrap();
            prop_assert!(!contains(&out, &middle), "offset {}", offset);
        }
        // In place: the characters before the value's stable middle are untouched, the stub's follow.
        let first = (8 * before.len()).div_ceil(6);
        let stub_middle = Encoding::Base64 { alphabet, offset, end: End::Middle }.encode(&stub).unwrap();
        prop_assert_eq!(&out[..first], &blob[..first]);
        prop_assert!(out[first..].starts_with(&stub_middle));
    }

    #[test]
    fn masked_echoes_lose_their_real_characters(
        real in real().prop_filter("long enough to mask", |r| r.len() >= encodings::MIN_ENCODED_LEN),
        stub in stub(),
        before in text(),
        after in text(),
        head in 0usize..48,
        tail in 0usize..48,
        mask in 0usize..5,
        run in 0usize..64,
        sizes in sizes(),
    ) {
        let n = real.len();
        // Each side shows none or 4 to n-1 real characters; at least one side shows some.
        let side = |k: usize| if k < 4 { 0 } else { 4 + k % (n - 4) };
        let (p, s) = (side(head), side(tail));
        prop_assume!(p > 0 || s > 0);
        let (symbol, min): (&[u8], usize) =
            [(b"*" as &[u8], 3), (b"x", 3), (b".", 3), ("\u{2022}".as_bytes(), 1), ("\u{2026}".as_bytes(), 1)][mask];
        let run = symbol.repeat(min + run % (64 - min + 1));
        let input = [before.clone(), real[..p].to_vec(), run.clone(), real[n - s..].to_vec(), after.clone()].concat();
        let subs = Substitutions::scrubbing([(&real, &stub)], Vec::new());
        let out = stream(&subs, &input, &sizes);
        let m = stub.len();
        let expected =
            [before, stub[..p.min(m)].to_vec(), run, stub[m - s.min(m)..].to_vec(), after].concat();
        prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
    }

    #[test]
    fn base64_wrapped_across_lines_loses_the_real_value_and_keeps_its_lines(
        real in real().prop_filter("long enough to encode", |r| r.len() >= encodings::MIN_ENCODED_LEN),
        stub in stub(),
        before in proptest::collection::vec(any::<u8>(), 0..160),
        after in proptest::collection::vec(any::<u8>(), 0..160),
        engine in 0usize..4,
        width in 0usize..3,
        eol in 0usize..4,
        sizes in sizes(),
    ) {
        let (engine, alphabet) = [
            (&STANDARD, Alphabet::Standard),
            (&STANDARD_NO_PAD, Alphabet::Standard),
            (&URL_SAFE, Alphabet::UrlSafe),
            (&URL_SAFE_NO_PAD, Alphabet::UrlSafe),
        ][engine];
        // MIME, PEM, GitHub's contents API.
        let width = [76, 64, 60][width];
        // Raw CRLF and LF; JSON-escaped (GitHub's `"content"` field) CRLF and LF.
        let eol: &[u8] = [&b"\r\n"[..], b"\n", b"\\r\\n", b"\\n"][eol];
        let blob = engine.encode([before.clone(), real.clone(), after].concat()).into_bytes();
        let lines: Vec<&[u8]> = blob.chunks(width).collect();
        let (head, tail) = (b"{\"content\":\"".to_vec(), b"\"}".to_vec());
        let input = [head.clone(), lines.join(eol), eol.to_vec(), tail].concat();
        let subs = Substitutions::scrubbing([(&real, &stub)], Vec::new());
        let out = stream(&subs, &input, &sizes);
        let breaks = |text: &[u8]| text.windows(eol.len()).filter(|w| *w == eol).count();
        prop_assert_eq!(breaks(&out), breaks(&input), "every line break is kept");
        let unwrapped = unwrap_lines(&out, eol);
        for offset in 0..3 {
            for alphabet in [Alphabet::Standard, Alphabet::UrlSafe] {
                let middle = Encoding::Base64 { alphabet, offset, end: End::Middle }.encode(&real).unwrap();
                prop_assert!(!contains(&unwrapped, &middle), "offset {}: {}", offset, String::from_utf8_lossy(&out));
            }
        }
        // In place: the characters before the value's stable middle are untouched, the stub's follow.
        let first = head.len() + (8 * before.len()).div_ceil(6);
        let offset = (before.len() % 3) as u8;
        let stub_middle = Encoding::Base64 { alphabet, offset, end: End::Middle }.encode(&stub).unwrap();
        prop_assert!(unwrapped[first..].starts_with(&stub_middle), "{}", String::from_utf8_lossy(&out));
    }
}
