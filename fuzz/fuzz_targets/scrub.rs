//! Fuzzes the streaming scrubber: streamed in any chunks it gives what rewriting the whole body
//! gives, holds back less than its longest pattern, and never lets the literal real value out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewrite::Substitutions;

// lap's scrubber, compiled in from its source (it needs nothing else of lap; `rewrite` finds
// `encodings` as its sibling, as in lap).
#[allow(dead_code)]
#[path = "../../src/vault/encodings.rs"]
mod encodings;
#[allow(dead_code)]
#[path = "../../src/vault/rewrite.rs"]
mod rewrite;

fuzz_target!(|data: &[u8]| {
    // Layout: [real length] [chunk sizes: 4 bytes] [real] [body].
    let Some((&len, rest)) = data.split_first() else { return };
    if rest.len() < 4 {
        return;
    }
    let (sizes, rest) = rest.split_at(4);
    let len = usize::from(len % 48) + 1;
    if rest.len() < len {
        return;
    }
    let (real, body) = rest.split_at(len);
    // Real values in the letters G to Z, a stub of zero bytes: every encoding of the stub (`AAAA`,
    // `0000`, `%00`, `\u0000`) is disjoint from them, so a real value in the output can only be one
    // the scrubber missed.
    let real: Vec<u8> = real.iter().map(|b| b'G' + b % 20).collect();
    let stub = [0u8; 20];
    let subs = Substitutions::scrubbing([(&real[..], &stub[..])], Vec::new());
    let whole = subs.replace_all(body).into_owned();

    let mut out = Vec::new();
    let mut carry = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= body.len() {
            break;
        }
        let end = (at + usize::from(size) + 1).min(body.len());
        subs.push(&mut carry, &body[at..end], &mut out);
        assert!(carry.len() < subs.longest().max(1));
        at = end;
    }
    subs.finish(&mut carry, &mut out);
    assert_eq!(out, whole, "streaming and whole rewriting differ");
    assert!(!out.windows(real.len()).any(|w| w == real), "the real value came out");
});
