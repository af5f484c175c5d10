//! Stub↔real substitution: the only code that writes a real credential's bytes.
//!
//! A [`Substitutions`] set maps needles to replacements — stubs to real values on the way out (built
//! only from the credentials bound to the request's host, see [`host_matches`]), real values to stubs
//! on the way back. [`StreamRewriter`] applies it to a body that arrives in chunks, in constant memory:
//! it holds back at most the longest needle's length minus one byte, so a stub split across chunk
//! boundaries is still found, and nothing else is buffered. Header values get the same treatment,
//! plus `Authorization: Basic`, whose base64 is decoded, rewritten and re-encoded (that is how git
//! sends a token).
//!
//! The bytes this module produces go to an upstream socket (outbound) or to the sandbox (inbound,
//! where only stubs remain); they are never logged.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Mutex;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;

/// A set of needle → replacement pairs, matched leftmost-longest.
pub struct Substitutions {
    matcher: Option<AhoCorasick>,
    needles: Vec<Vec<u8>>,
    replacements: Vec<Vec<u8>>,
    longest: usize,
    /// Indices of the pairs that matched so far, for the audit log.
    hits: Mutex<BTreeSet<usize>>,
}

impl std::fmt::Debug for Substitutions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substitutions")
            .field("pairs", &self.replacements.len())
            .finish_non_exhaustive()
    }
}

impl Substitutions {
    /// Builds the set; empty needles are ignored.
    pub fn new<N: AsRef<[u8]>, R: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (N, R)>) -> Self {
        let (needles, replacements): (Vec<Vec<u8>>, Vec<Vec<u8>>) = pairs
            .into_iter()
            .filter(|(n, _)| !n.as_ref().is_empty())
            .map(|(n, r)| (n.as_ref().to_vec(), r.as_ref().to_vec()))
            .unzip();
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        let matcher = (!needles.is_empty()).then(|| {
            // A set is built per request and holds a few needles: the contiguous NFA builds in a
            // fraction of a DFA's time, and the prefilter does the searching either way.
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .build(&needles)
                .expect("literal needles always build")
        });
        Self {
            matcher,
            needles,
            replacements,
            longest,
            hits: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Whether `input` contains any needle.
    pub fn finds_any(&self, input: &[u8]) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(input))
    }

    /// Replaces every needle in `input`.
    pub fn replace_all<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let Some(matcher) = self.matcher.as_ref().filter(|m| m.is_match(input)) else {
            return Cow::Borrowed(input);
        };
        let mut out = Vec::with_capacity(input.len());
        let mut emitted = 0;
        for m in matcher.find_iter(input) {
            out.extend_from_slice(&input[emitted..m.start()]);
            out.extend_from_slice(self.replacement(m.pattern().as_usize()));
            emitted = m.end();
        }
        out.extend_from_slice(&input[emitted..]);
        Cow::Owned(out)
    }

    fn replacement(&self, index: usize) -> &[u8] {
        self.hits.lock().unwrap_or_else(|p| p.into_inner()).insert(index);
        &self.replacements[index]
    }

    /// Indices (in construction order) of the pairs that have matched so far.
    /// [`Self::hits`], forgetting them: what matches afterwards is counted afresh.
    pub fn take_hits(&self) -> Vec<usize> {
        std::mem::take(&mut *self.hits.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    pub fn hits(&self) -> Vec<usize> {
        self.hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// A rewriter for one streamed body.
    pub fn stream(&self) -> StreamRewriter<'_> {
        StreamRewriter {
            subs: self,
            carry: Vec::new(),
        }
    }

    /// Rewrites a header value; `Authorization: Basic` credentials are decoded, rewritten and
    /// re-encoded. Returns `None` when nothing changed.
    pub fn header_value(&self, value: &[u8]) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        if let Some(encoded) = strip_prefix_ignore_case(value, b"basic ") {
            let engine = base64::engine::general_purpose::STANDARD;
            if let Ok(decoded) = engine.decode(trim(encoded))
                && let Cow::Owned(rewritten) = self.replace_all(&decoded)
            {
                let mut out = value[..value.len() - encoded.len()].to_vec();
                out.extend_from_slice(engine.encode(rewritten).as_bytes());
                return Some(out);
            }
        }
        match self.replace_all(value) {
            Cow::Owned(rewritten) => Some(rewritten),
            Cow::Borrowed(_) => None,
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &value[prefix.len()..])
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Rewrites a body chunk by chunk. Call [`push`](Self::push) per chunk, then [`finish`](Self::finish).
pub struct StreamRewriter<'a> {
    subs: &'a Substitutions,
    carry: Vec<u8>,
}

impl StreamRewriter<'_> {
    /// Appends the rewritten output that is final after `chunk` to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.subs.push(&mut self.carry, chunk, out);
    }

    /// Appends whatever is still held back, rewritten, to `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.subs.finish(&mut self.carry, out);
    }

    /// Bytes currently held back: a tail that could begin a needle, shorter than the longest one.
    pub fn held(&self) -> usize {
        self.carry.len()
    }
}

impl Substitutions {
    /// The streaming step: rewrites `carry ‖ chunk` into `out` as far as it is final, and keeps the
    /// rest (shorter than the longest needle) in `carry` for the next chunk.
    pub fn push(&self, carry: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &self.matcher else {
            out.extend_from_slice(chunk);
            return;
        };
        carry.extend_from_slice(chunk);
        let buf = std::mem::take(carry);
        // Only a tail that could still begin a needle waits for more data; everything before it is
        // final now (a streamed answer is never held up by more than a possible needle).
        let safe = buf.len() - self.pending_tail(&buf);
        let mut emitted = 0;
        for m in matcher.find_iter(&buf) {
            if m.start() >= safe {
                break;
            }
            out.extend_from_slice(&buf[emitted..m.start()]);
            out.extend_from_slice(self.replacement(m.pattern().as_usize()));
            emitted = m.end();
        }
        let keep_from = emitted.max(safe);
        out.extend_from_slice(&buf[emitted..keep_from]);
        *carry = buf[keep_from..].to_vec();
    }

    /// Whether `chunk`, streamed with nothing held back, comes out unchanged at once: no needle in it
    /// and no tail that could begin one.
    pub fn passes_through(&self, chunk: &[u8]) -> bool {
        self.is_empty() || (!self.finds_any(chunk) && self.pending_tail(chunk) == 0)
    }

    /// The length of the longest tail of `buf` that is a proper prefix of some needle.
    fn pending_tail(&self, buf: &[u8]) -> usize {
        let most = self.longest.saturating_sub(1).min(buf.len());
        (1..=most)
            .rev()
            .find(|&k| {
                let tail = &buf[buf.len() - k..];
                self.needles.iter().any(|n| n.len() > k && n.starts_with(tail))
            })
            .unwrap_or(0)
    }

    /// The last streaming step: rewrites what `carry` still holds into `out`.
    pub fn finish(&self, carry: &mut Vec<u8>, out: &mut Vec<u8>) {
        let rest = std::mem::take(carry);
        out.extend_from_slice(&self.replace_all(&rest));
    }

    /// The longest needle, in bytes.
    pub fn longest(&self) -> usize {
        self.longest
    }
}

/// Whether `host:port` is covered by a binding pattern: `host`, `*.suffix` (any subdomain, not the
/// suffix itself), each optionally with `:port` (without one, any port matches). Case-insensitive.
pub fn host_matches(pattern: &str, host: &str, port: u16) -> bool {
    let (name, want_port) = match pattern.rsplit_once(':') {
        Some((name, p)) => match p.parse::<u16>() {
            Ok(p) => (name, Some(p)),
            Err(_) => return false,
        },
        None => (pattern, None),
    };
    if want_port.is_some_and(|p| p != port) {
        return false;
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = name.to_ascii_lowercase();
    match name.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => host == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs() -> Substitutions {
        Substitutions::new([
            ("stub_github_token_3fa91c0d", "ghp_REAL"),
            ("stub_openai_api_key_11223344", "sk-REAL"),
        ])
    }

    fn stream_in_pieces(subs: &Substitutions, input: &[u8], piece: usize) -> Vec<u8> {
        let mut rewriter = subs.stream();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            rewriter.push(chunk, &mut out);
            assert!(rewriter.held() < subs.longest, "holds back no more than a needle");
        }
        rewriter.finish(&mut out);
        out
    }

    #[test]
    fn whole_buffers_are_rewritten() {
        let out = subs().replace_all(b"token=stub_github_token_3fa91c0d&k=stub_openai_api_key_11223344");
        assert_eq!(&*out, b"token=ghp_REAL&k=sk-REAL");
        assert!(matches!(subs().replace_all(b"nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_stub_split_across_every_possible_boundary_is_found() {
        let subs = subs();
        let input = b"{\"a\":\"stub_github_token_3fa91c0d\",\"b\":\"stub_openai_api_key_11223344\"}".to_vec();
        let expected = subs.replace_all(&input).into_owned();
        for piece in 1..=input.len() {
            assert_eq!(stream_in_pieces(&subs, &input, piece), expected, "piece size {piece}");
        }
    }

    #[test]
    fn near_misses_pass_through_unchanged() {
        let subs = subs();
        let input = b"stub_github_token_3fa91c0 stub_github_token_3fa91c0dX".to_vec();
        let out = stream_in_pieces(&subs, &input, 3);
        assert_eq!(out, b"stub_github_token_3fa91c0 ghp_REALX");
    }

    #[test]
    fn large_bodies_stream_in_constant_memory() {
        let subs = subs();
        let mut rewriter = subs.stream();
        let chunk = vec![b'x'; 64 * 1024];
        let mut total = 0;
        for _ in 0..256 {
            let mut out = Vec::new();
            rewriter.push(&chunk, &mut out);
            total += out.len();
            assert!(rewriter.held() < subs.longest);
        }
        let mut out = Vec::new();
        rewriter.finish(&mut out);
        assert_eq!(total + out.len(), 256 * 64 * 1024);
    }

    #[test]
    fn basic_auth_is_decoded_swapped_and_reencoded() {
        let engine = base64::engine::general_purpose::STANDARD;
        let header = format!("Basic {}", engine.encode("x-access-token:stub_github_token_3fa91c0d"));
        let out = subs().header_value(header.as_bytes()).unwrap();
        let out = String::from_utf8(out).unwrap();
        let decoded = engine.decode(out.strip_prefix("Basic ").unwrap()).unwrap();
        assert_eq!(decoded, b"x-access-token:ghp_REAL");
        assert_eq!(
            subs().header_value(b"Bearer stub_openai_api_key_11223344").unwrap(),
            b"Bearer sk-REAL"
        );
        assert_eq!(subs().header_value(b"Bearer unrelated"), None);
    }

    #[test]
    fn text_that_cannot_begin_a_needle_is_never_held_back() {
        let subs = subs();
        let mut rewriter = subs.stream();
        let mut out = Vec::new();
        rewriter.push(b"data: {\"token\":\"Hel\"}\n\n", &mut out);
        assert_eq!(
            out, b"data: {\"token\":\"Hel\"}\n\n",
            "an SSE event goes out whole, at once"
        );
        out.clear();
        rewriter.push(b"data: stub_git", &mut out);
        assert_eq!(out, b"data: ", "only a possible stub waits");
        rewriter.push(b"hub_token_3fa91c0d!", &mut out);
        assert_eq!(out, b"data: ghp_REAL!");
    }

    #[test]
    fn an_empty_set_passes_everything_through() {
        let none = Substitutions::new(Vec::<(&[u8], &[u8])>::new());
        assert!(none.passes_through(b"anything at all"));
        assert!(subs().passes_through(b"plain text"));
        assert!(!subs().passes_through(b"ends with stub_git"));
        assert!(!subs().passes_through(b"has stub_github_token_3fa91c0d inside"));
    }

    #[test]
    fn hits_name_the_pairs_that_matched() {
        let subs = subs();
        assert!(subs.hits().is_empty());
        stream_in_pieces(&subs, b"x stub_openai_api_key_11223344 y", 5);
        assert_eq!(subs.hits(), vec![1]);
    }

    #[test]
    fn reversed_sets_scrub_real_values_back_to_stubs() {
        let scrub = Substitutions::new([("ghp_REAL", "stub_github_token_3fa91c0d")]);
        assert_eq!(
            &*scrub.replace_all(b"echo: ghp_REAL"),
            b"echo: stub_github_token_3fa91c0d"
        );
    }

    #[test]
    fn host_patterns_bind_exact_hosts_suffixes_and_ports() {
        assert!(host_matches("api.github.com", "API.GitHub.com", 443));
        assert!(!host_matches("api.github.com", "evil.com", 443));
        assert!(!host_matches("api.github.com", "api.github.com.evil.com", 443));
        assert!(host_matches("*.github.com", "api.github.com", 443));
        assert!(!host_matches("*.github.com", "github.com", 443));
        assert!(!host_matches("*.github.com", "evilgithub.com", 443));
        assert!(host_matches("h.test:8443", "h.test", 8443));
        assert!(!host_matches("h.test:8443", "h.test", 443));
        assert!(!host_matches("h.test:nope", "h.test", 443));
    }
}
