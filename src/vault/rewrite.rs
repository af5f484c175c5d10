//! Stub↔real substitution: the only code that writes a real credential's bytes.
//!
//! A [`Substitutions`] set maps needles to replacements — stubs to real values on the way out (built
//! only from the credentials bound to the request's host, see [`host_matches`]), real values to stubs
//! on the way back. [`StreamRewriter`] applies it to a body that arrives in chunks, in constant memory:
//! it holds back at most the longest needle's length minus one byte, so a stub split across chunk
//! boundaries is still found, and nothing else is buffered. A scrub set also finds each real value's
//! base64 wrapped across lines ([`super::wrapped`]), holding back a chunk's end only near a line
//! break that may split one. Header values get the same treatment,
//! plus `Authorization: Basic`, whose base64 is decoded, rewritten and re-encoded (that is how git
//! sends a token).
//!
//! The bytes this module produces go to an upstream socket (outbound) or to the sandbox (inbound,
//! where only stubs remain); they are never logged.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, Input, MatchKind};
use base64::Engine;
use hyper::body::Bytes;

use super::encodings::{self, Alphabet, Encoding, End};
use super::needles::{Found, Matcher};
use super::wrapped::{self, Wrapped};

/// Real characters a masked echo must show on at least one side of its mask run to be recognised.
pub const MIN_MASK_SIDE: usize = 4;
/// The longest mask run looked at, in characters: it bounds what a masked echo can hold back.
pub const MAX_MASK_RUN: usize = 64;
/// Mask characters and the shortest run of each that counts as a mask: three of the ASCII ones (one
/// or two are punctuation), one of the typographic ones.
const MASK_RUNS: [(&[u8], usize); 5] = [
    (b"*", 3),
    (b"x", 3),
    (b".", 3),
    ("\u{2022}".as_bytes(), 1),
    ("\u{2026}".as_bytes(), 1),
];
/// How many compiled scrub sets are kept (one per distinct credential list in use).
const SCRUB_CACHE_SLOTS: usize = 32;

/// A masked echo of one real value: its head or tail around a run of mask characters.
struct Mask {
    real: Vec<u8>,
    stub: Vec<u8>,
    group: usize,
}

/// What a masked-echo check at one position concluded.
enum Echo {
    /// `len` bytes form an echo, to be replaced with `with`.
    Found { len: usize, with: Vec<u8>, group: usize },
    /// Nothing here.
    No,
    /// The text ends before it can be decided.
    NeedMore,
}

impl Mask {
    /// The longest echo in bytes: the whole value on both sides of the longest run.
    fn longest(&self) -> usize {
        2 * self.real.len() + MAX_MASK_RUN * 3
    }

    /// Whether `text` begins with an echo of this value: `head? run tail?`, where `head` is a prefix
    /// of the value and `tail` a suffix, each of at least [`MIN_MASK_SIDE`] bytes, one of them present.
    fn check(&self, text: &[u8], last: bool) -> Echo {
        let real = &self.real;
        let n = real.len();
        let mut p = text.iter().zip(real).take_while(|(a, b)| a == b).count();
        if p == text.len() && p < n && !last {
            return Echo::NeedMore;
        }
        if p < MIN_MASK_SIDE {
            p = 0;
        }
        let rest = &text[p..];
        let Some(&(symbol, min_run)) = MASK_RUNS.iter().find(|(s, _)| rest.starts_with(s)) else {
            let partial = MASK_RUNS
                .iter()
                .any(|(s, _)| rest.len() < s.len() && s.starts_with(rest));
            return if partial && !last { Echo::NeedMore } else { Echo::No };
        };
        let mut u = p;
        let mut run = 0;
        while run < MAX_MASK_RUN && text[u..].starts_with(symbol) {
            u += symbol.len();
            run += 1;
        }
        let more = &text[u..];
        if !last && run < MAX_MASK_RUN && more.len() < symbol.len() && symbol.starts_with(more) {
            return Echo::NeedMore;
        }
        if run < min_run {
            return Echo::No;
        }
        // The longest suffix of the value that follows the run; undecided while a longer one could.
        let avail = more.len();
        if !last && avail < n && (avail + 1..=n).any(|s| real[n - s..].starts_with(more)) {
            return Echo::NeedMore;
        }
        let s = (MIN_MASK_SIDE..=n.min(avail))
            .rev()
            .find(|&s| real[n - s] == more[0] && more[..s] == real[n - s..])
            .unwrap_or(0);
        if p == 0 && s == 0 {
            return Echo::No;
        }
        let stub = &self.stub;
        let mut with = stub[..p.min(stub.len())].to_vec();
        with.extend_from_slice(&text[p..u]);
        with.extend_from_slice(&stub[stub.len() - s.min(stub.len())..]);
        Echo::Found {
            len: u + s,
            with,
            group: self.group,
        }
    }
}

/// Where to look for the next masked echo after none began at the start of `text`: past a mask run
/// (a shorter tail of it ends the same way), except its last [`MAX_MASK_RUN`] characters when it is
/// longer (those may still precede a real suffix). This keeps a body of mask characters linear.
fn run_skip(text: &[u8]) -> usize {
    let Some((symbol, _)) = MASK_RUNS.iter().find(|(s, _)| text.starts_with(s)) else {
        return 1;
    };
    let run = match symbol {
        [byte] => run_of(text, *byte),
        _ => text.chunks_exact(symbol.len()).take_while(|c| c == symbol).count() * symbol.len(),
    };
    let capped = MAX_MASK_RUN * symbol.len();
    if run > capped { run - capped } else { run }.max(1)
}

/// How many bytes `text` begins with that are `byte`: eight at a time (a body of mask characters
/// is one long run).
fn run_of(text: &[u8], byte: u8) -> usize {
    let word = [byte; 8];
    let whole = text.chunks_exact(8).take_while(|c| *c == word).count() * 8;
    whole + text[whole..].iter().take_while(|b| **b == byte).count()
}

/// A quick, conservative test of whether a tail of a chunk could be a proper prefix of some pattern:
/// its first byte, first two bytes and (hashed) first three bytes must begin a pattern longer than
/// the tail. Checking each of the up to [`NeedleSet::longest_needle`] tails of every chunk by search
/// alone would cost more than the scan itself; this rules out nearly all of them with three lookups.
struct TailFilter {
    one: [bool; 256],
    two: Box<[u64; 1024]>,
    three: Box<[u64; 1024]>,
}

impl TailFilter {
    fn new(patterns: &[Vec<u8>]) -> Self {
        let mut filter = Self {
            one: [false; 256],
            two: Box::new([0; 1024]),
            three: Box::new([0; 1024]),
        };
        for p in patterns {
            if p.len() >= 2 {
                filter.one[usize::from(p[0])] = true;
            }
            if p.len() >= 3 {
                let i = Self::pair(p);
                filter.two[i / 64] |= 1 << (i % 64);
            }
            if p.len() >= 4 {
                let i = Self::triple(p);
                filter.three[i / 64] |= 1 << (i % 64);
            }
        }
        filter
    }

    fn pair(p: &[u8]) -> usize {
        usize::from(p[0]) << 8 | usize::from(p[1])
    }

    fn triple(p: &[u8]) -> usize {
        (usize::from(p[0]).wrapping_mul(0x9e37)
            ^ usize::from(p[1]).wrapping_mul(0x85eb)
            ^ usize::from(p[2]).wrapping_mul(0x2f))
            & 0xffff
    }

    /// False only when `tail` (non-empty) certainly begins no pattern longer than itself.
    #[inline]
    fn may_begin(&self, tail: &[u8]) -> bool {
        let bit = |set: &[u64; 1024], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
        self.one[usize::from(tail[0])]
            && (tail.len() < 2 || bit(&self.two, Self::pair(tail)))
            && (tail.len() < 3 || bit(&self.three, Self::triple(tail)))
    }
}

/// A compiled set of needle → replacement pairs (and masked echoes), shareable between requests.
pub struct NeedleSet {
    /// The pairs' needles, matched leftmost-longest.
    pairs: Matcher,
    /// Where a masked echo may begin: each value's first [`MIN_MASK_SIDE`] bytes, each mask run.
    triggers: Option<AhoCorasick>,
    needles: Vec<Vec<u8>>,
    replacements: Vec<Vec<u8>>,
    /// The credential (or extra pair) each needle belongs to, reported by [`Substitutions::hits`].
    groups: Vec<usize>,
    masks: Vec<Mask>,
    /// Needles and triggers sorted, for finding a tail that could begin one.
    prefixes: Vec<Vec<u8>>,
    /// Which tails could begin a needle or trigger, cheaply (see [`TailFilter`]).
    tails: TailFilter,
    /// The real values' base64 forms, for finding them wrapped across lines (scrub sets only).
    wrapped: Option<Wrapped>,
    longest_needle: usize,
    longest: usize,
}

/// A needle found across line breaks ([`super::wrapped`]): `start..end` of the text, the needle's
/// index, and the breaks inside (how many of its characters come before each, and its bytes).
struct WrappedFound {
    start: usize,
    end: usize,
    id: usize,
    breaks: Vec<(usize, std::ops::Range<usize>)>,
}

impl std::fmt::Debug for NeedleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NeedleSet")
            .field("pairs", &self.needles.len())
            .field("masks", &self.masks.len())
            .finish_non_exhaustive()
    }
}

impl NeedleSet {
    fn build(pairs: Vec<(usize, Vec<u8>, Vec<u8>)>, masks: Vec<Mask>, wrapped: Option<Wrapped>) -> Self {
        let mut needles = Vec::new();
        let mut replacements = Vec::new();
        let mut groups = Vec::new();
        for (group, needle, with) in pairs {
            if !needle.is_empty() {
                needles.push(needle);
                replacements.push(with);
                groups.push(group);
            }
        }
        let mut triggers: Vec<Vec<u8>> = Vec::new();
        if !masks.is_empty() {
            for (symbol, min_run) in MASK_RUNS {
                triggers.push(symbol.repeat(min_run));
            }
            for mask in &masks {
                let head = mask.real[..MIN_MASK_SIDE].to_vec();
                if !triggers.contains(&head) {
                    triggers.push(head);
                }
            }
        }
        // A handful of short patterns: the automaton's own prefilter finds them fast.
        let triggers_matcher = (!triggers.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&triggers)
                .expect("literal triggers always build")
        });
        let mut prefixes: Vec<Vec<u8>> = needles.iter().chain(&triggers).cloned().collect();
        prefixes.sort();
        prefixes.dedup();
        let tails = TailFilter::new(&prefixes);
        let longest_needle = prefixes.iter().map(Vec::len).max().unwrap_or(0);
        let longest = masks
            .iter()
            .map(Mask::longest)
            .chain(wrapped.as_ref().map(Wrapped::held))
            .fold(longest_needle, usize::max);
        Self {
            pairs: Matcher::new(&needles),
            triggers: triggers_matcher,
            needles,
            replacements,
            groups,
            masks,
            prefixes,
            tails,
            wrapped,
            longest_needle,
            longest,
        }
    }

    /// Literal pairs, each its own group (its index).
    pub fn literal<N: AsRef<[u8]>, R: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (N, R)>) -> Self {
        Self::grouped(
            pairs
                .into_iter()
                .enumerate()
                .map(|(i, (n, r))| (i, n.as_ref().to_vec(), r.as_ref().to_vec())),
        )
    }

    /// Literal `(group, needle, replacement)` triples.
    pub fn grouped(pairs: impl IntoIterator<Item = (usize, Vec<u8>, Vec<u8>)>) -> Self {
        Self::build(pairs.into_iter().collect(), Vec::new(), None)
    }

    /// The group of the leftmost-longest needle in `input`.
    pub fn find_group(&self, input: &[u8]) -> Option<usize> {
        self.pairs.find(input, 0).map(|found| self.groups[found.id])
    }

    /// Whether it has no needle.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether `input` holds a needle, a place a masked echo may begin, or a line break that may
    /// split a real value's base64 form.
    fn has_any(&self, input: &[u8]) -> bool {
        self.pairs.is_match(input)
            || self.triggers.as_ref().is_some_and(|t| t.is_match(input))
            || self
                .wrapped
                .as_ref()
                .is_some_and(|w| !w.scan(input, true).breaks.is_empty())
    }

    /// The needles `buf` holds across line breaks, in order and apart, and where `buf` must be
    /// held back from when it is not `last` ([`super::wrapped`]).
    fn wrapped_in(&self, buf: &[u8], last: bool) -> (Vec<WrappedFound>, usize) {
        let Some(wrapped) = &self.wrapped else {
            return (Vec::new(), buf.len());
        };
        let scan = wrapped.scan(buf, last);
        let mut found: Vec<WrappedFound> = Vec::new();
        for split in &scan.breaks {
            let window = split.start.saturating_sub(wrapped.window())..(split.end + wrapped.window()).min(buf.len());
            let text = wrapped::dewrap(buf, window);
            let mut from = 0;
            while let Some(m) = self.pairs.find(&text.text, from) {
                from = m.end;
                let (start, end) = (text.at[m.start], text.at[m.end - 1] + 1);
                // In one piece: the scan of the text as it is finds it.
                if end - start == m.end - m.start || found.iter().any(|f| f.start < end && start < f.end) {
                    continue;
                }
                let breaks = text
                    .breaks
                    .iter()
                    .filter(|(before, _)| (m.start + 1..m.end).contains(before))
                    .map(|(before, bytes)| (before - m.start, bytes.clone()))
                    .collect();
                found.push(WrappedFound {
                    start,
                    end,
                    id: m.id,
                    breaks,
                });
            }
        }
        found.sort_by_key(|f| f.start);
        (found, scan.hold)
    }

    /// The scrub set: each `(real, stub)` in every routine encoding ([`encodings::pairs`]) and as a
    /// masked echo, group `i` for the `i`th value; then `extra` literal pairs, groups following.
    pub fn scrubbing<R: AsRef<[u8]>, S: AsRef<[u8]>>(
        values: impl IntoIterator<Item = (R, S)>,
        extra: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Self {
        let mut pairs = Vec::new();
        let mut masks = Vec::new();
        let mut base64 = Vec::new();
        let mut group = 0;
        for (real, stub) in values {
            let (real, stub) = (real.as_ref(), stub.as_ref());
            pairs.extend(encodings::pairs(real, stub).into_iter().map(|(n, r)| (group, n, r)));
            if real.len() >= encodings::MIN_ENCODED_LEN {
                masks.push(Mask {
                    real: real.to_vec(),
                    stub: stub.to_vec(),
                    group,
                });
                for alphabet in [Alphabet::Standard, Alphabet::UrlSafe] {
                    for offset in 0..3 {
                        base64.extend(
                            Encoding::Base64 {
                                alphabet,
                                offset,
                                end: End::Padded,
                            }
                            .encode(real),
                        );
                    }
                }
            }
            group += 1;
        }
        for (needle, with) in extra {
            pairs.push((group, needle, with));
            group += 1;
        }
        Self::build(pairs, masks, Wrapped::new(base64))
    }

    /// [`Self::scrubbing`] without extras, compiled once per distinct value list and kept: compiling
    /// some thirty needles per credential takes longer than forwarding a request. Kept in a small
    /// process-wide cache ([`SCRUB_CACHE_SLOTS`]) keyed by a SHA-256 of the pairs.
    pub fn scrubbing_cached<R: AsRef<[u8]>, S: AsRef<[u8]>>(values: impl IntoIterator<Item = (R, S)>) -> Arc<Self> {
        static CACHE: Mutex<Vec<([u8; 32], Arc<NeedleSet>)>> = Mutex::new(Vec::new());
        let values: Vec<(R, S)> = values.into_iter().collect();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for (real, stub) in &values {
            for part in [real.as_ref(), stub.as_ref()] {
                digest.update(&(part.len() as u64).to_le_bytes());
                digest.update(part);
            }
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.finish().as_ref());
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(k, _)| *k == key) {
            let entry = cache.remove(i);
            let set = entry.1.clone();
            cache.push(entry);
            return set;
        }
        let set = Arc::new(Self::scrubbing(values, []));
        if cache.len() >= SCRUB_CACHE_SLOTS {
            cache.remove(0);
        }
        cache.push((key, set.clone()));
        set
    }

    /// The length of the longest tail of `buf` that is a proper prefix of some needle or trigger.
    ///
    /// Called on every chunk, over up to [`Self::longest_needle`] positions (a thousand, with a long
    /// key's `\uXXXX` form among the needles): one byte lookup rules out most positions inline, the
    /// rest go through the [`TailFilter`] and only then a search of the sorted prefixes.
    pub fn pending_tail(&self, buf: &[u8]) -> usize {
        let most = self.longest_needle.saturating_sub(1).min(buf.len());
        // Longest tail first: the first position from the left whose tail begins a longer pattern.
        for at in buf.len() - most..buf.len() {
            if !self.tails.one[usize::from(buf[at])] {
                continue;
            }
            let tail = &buf[at..];
            if self.tails.may_begin(tail) && self.begins_longer(tail) {
                return tail.len();
            }
        }
        0
    }

    /// Whether some needle or trigger longer than `tail` starts with it.
    fn begins_longer(&self, tail: &[u8]) -> bool {
        // Needles starting with `tail` sort right at (or, after `tail` itself, next to) its
        // insertion point.
        let at = self.prefixes.partition_point(|p| p.as_slice() < tail);
        self.prefixes[at..]
            .iter()
            .take(2)
            .any(|p| p.len() > tail.len() && p.starts_with(tail))
    }

    /// Rewrites `buf` into `out` as far as it is final and returns how far that is: everything when
    /// `last`, else up to a tail that could still begin a needle or an undecided masked echo.
    fn rewrite(&self, buf: &[u8], last: bool, out: &mut Vec<u8>, hit: &mut dyn FnMut(usize)) -> usize {
        let (done, unchanged) = self.rewrite_until(buf, last, out, hit);
        out.extend_from_slice(&buf[unchanged..done]);
        done
    }

    /// [`Self::rewrite`], leaving the copy of the unchanged stretch before the end to the caller:
    /// returns `(done, unchanged)`, where `out` holds what `buf[..unchanged]` becomes and
    /// `buf[unchanged..done]` goes on as it is. A chunk with nothing to replace is then passed on
    /// without a copy.
    fn rewrite_until(&self, buf: &[u8], last: bool, out: &mut Vec<u8>, hit: &mut dyn FnMut(usize)) -> (usize, usize) {
        let pairs = &self.pairs;
        if pairs.is_empty() {
            return (buf.len(), 0);
        }
        let (wrapped, hold) = self.wrapped_in(buf, last);
        let safe = if last {
            buf.len()
        } else {
            (buf.len() - self.pending_tail(buf)).min(hold)
        };
        let mut next_wrapped = wrapped.iter().peekable();
        let mut emitted = 0;
        let mut at = 0;
        let mut trigger_from = 0;
        // The next match of each kind at or after `at` (and `trigger_from`): a match found from an
        // earlier position is still the next one as long as it starts at or after the current one.
        let span = |from: usize| Input::new(buf).span(from..buf.len());
        let mut next_pair = pairs.find(buf, 0);
        let mut next_trigger = self.triggers.as_ref().and_then(|t| t.find(span(0)));
        loop {
            if next_pair.is_some_and(|m| m.start < at) {
                next_pair = pairs.find(buf, at);
            }
            let from = trigger_from.max(at);
            if let Some(triggers) = &self.triggers
                && next_trigger.is_some_and(|t| t.start() < from)
            {
                next_trigger = triggers.find(span(from));
            }
            let plain = match (next_pair, next_trigger) {
                (None, None) => None,
                (Some(m), Some(t)) if t.start() < m.start => Some((t.start(), true)),
                (None, Some(t)) => Some((t.start(), true)),
                (Some(m), _) => Some((m.start, false)),
            };
            while next_wrapped.next_if(|w| w.start < at).is_some() {}
            if let Some(w) = next_wrapped.peek()
                && plain.is_none_or(|(start, _)| w.start <= start)
            {
                if w.start >= safe {
                    break;
                }
                out.extend_from_slice(&buf[emitted..w.start]);
                hit(self.groups[w.id]);
                let breaks: Vec<(usize, &[u8])> = w.breaks.iter().map(|(n, r)| (*n, &buf[r.clone()])).collect();
                out.extend_from_slice(&wrapped::rewrap(&self.replacements[w.id], &breaks));
                emitted = w.end;
                at = w.end;
                continue;
            }
            let Some((start, echo)) = plain else {
                break;
            };
            if start >= safe {
                break;
            }
            if !echo {
                let Some(Found { start, end, id }) = next_pair else {
                    break;
                };
                out.extend_from_slice(&buf[emitted..start]);
                hit(self.groups[id]);
                out.extend_from_slice(&self.replacements[id]);
                emitted = end;
                at = end;
                continue;
            }
            match self.echo(&buf[start..], last) {
                Echo::Found { len, with, group } => {
                    out.extend_from_slice(&buf[emitted..start]);
                    hit(group);
                    out.extend_from_slice(&with);
                    emitted = start + len;
                    at = start + len;
                }
                Echo::No => trigger_from = start + run_skip(&buf[start..]),
                Echo::NeedMore => return (start, emitted),
            }
        }
        (emitted.max(safe), emitted)
    }

    /// The longest masked echo at the start of `text`, or whether it needs more text to tell.
    fn echo(&self, text: &[u8], last: bool) -> Echo {
        let mut best = Echo::No;
        for mask in &self.masks {
            match mask.check(text, last) {
                Echo::NeedMore => return Echo::NeedMore,
                Echo::Found { len, with, group } => {
                    if !matches!(&best, Echo::Found { len: l, .. } if *l >= len) {
                        best = Echo::Found { len, with, group };
                    }
                }
                Echo::No => {}
            }
        }
        best
    }
}

/// A set of needle → replacement pairs, matched leftmost-longest, plus (for scrubbing) masked echoes;
/// with the record of which matched, for the audit log.
pub struct Substitutions {
    set: Arc<NeedleSet>,
    /// Groups of the pairs that matched so far.
    hits: Mutex<BTreeSet<usize>>,
}

impl std::fmt::Debug for Substitutions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substitutions")
            .field("pairs", &self.set.needles.len())
            .finish_non_exhaustive()
    }
}

impl Substitutions {
    /// Builds a literal set; empty needles are ignored. Hits are pair indices.
    pub fn new<N: AsRef<[u8]>, R: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (N, R)>) -> Self {
        Self::from_set(Arc::new(NeedleSet::literal(pairs)))
    }

    /// Scrubs each `(real, stub)` in every routine encoding and as a masked echo, then `extra`
    /// literal pairs. Hits are value indices, the extras' following.
    pub fn scrubbing<R: AsRef<[u8]>, S: AsRef<[u8]>>(
        values: impl IntoIterator<Item = (R, S)>,
        extra: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Self {
        if extra.is_empty() {
            return Self::from_set(NeedleSet::scrubbing_cached(values));
        }
        Self::from_set(Arc::new(NeedleSet::scrubbing(values, extra)))
    }

    /// A fresh record of hits over a compiled set.
    pub fn from_set(set: Arc<NeedleSet>) -> Self {
        Self {
            set,
            hits: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.set.pairs.is_empty()
    }

    /// Whether `input` contains any needle or masked echo.
    pub fn finds_any(&self, input: &[u8]) -> bool {
        if self.set.masks.is_empty() && self.set.wrapped.is_none() {
            return self.set.pairs.is_match(input);
        }
        let mut found = false;
        self.set.rewrite(input, true, &mut Vec::new(), &mut |_| found = true);
        found
    }

    /// Replaces every needle (and masked echo) in `input`.
    pub fn replace_all<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.set.has_any(input) {
            return Cow::Borrowed(input);
        }
        let mut out = Vec::with_capacity(input.len());
        let mut found = false;
        let mut hits = Vec::new();
        self.set.rewrite(input, true, &mut out, &mut |g| {
            found = true;
            hits.push(g);
        });
        self.record(hits);
        if found { Cow::Owned(out) } else { Cow::Borrowed(input) }
    }

    fn record(&self, groups: Vec<usize>) {
        if !groups.is_empty() {
            self.hits.lock().unwrap_or_else(|p| p.into_inner()).extend(groups);
        }
    }

    /// Groups (in construction order) that have matched so far, forgetting them: what matches
    /// afterwards is counted afresh.
    pub fn take_hits(&self) -> Vec<usize> {
        std::mem::take(&mut *self.hits.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Groups (in construction order) that have matched so far.
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

    /// Bytes currently held back: a tail that could begin a needle or an undecided masked echo,
    /// shorter than [`Substitutions::longest`].
    pub fn held(&self) -> usize {
        self.carry.len()
    }
}

impl Substitutions {
    /// The streaming step: rewrites `carry ‖ chunk` into `out` as far as it is final, and keeps the
    /// rest (shorter than [`Self::longest`]) in `carry` for the next chunk. Only a tail that could
    /// still begin a needle, or a masked echo not yet decided, waits for more data; everything before
    /// it is final now (a streamed answer is never held up by more than that).
    pub fn push(&self, carry: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<u8>) {
        if self.is_empty() {
            out.extend_from_slice(chunk);
            return;
        }
        carry.extend_from_slice(chunk);
        let buf = std::mem::take(carry);
        let mut hits = Vec::new();
        let done = self.set.rewrite(&buf, false, out, &mut |g| hits.push(g));
        self.record(hits);
        *carry = buf[done..].to_vec();
    }

    /// [`Self::push`] for a chunk that is shared bytes: what can go on now, in two parts (either
    /// may be empty). Whatever is held back is resolved with at most [`Self::longest`] bytes of the
    /// chunk joined to it, which is the first part; the rest of the chunk is scanned where it lies
    /// and, up to its first replacement, goes on as a slice of `chunk` (no copy).
    pub fn push_bytes(&self, carry: &mut Vec<u8>, chunk: Bytes) -> [Bytes; 2] {
        if self.is_empty() {
            return [chunk, Bytes::new()];
        }
        let mut hits = Vec::new();
        let mut out = Vec::new();
        let mut rest = chunk;
        let mut resolved = Bytes::new();
        if !carry.is_empty() {
            let held = carry.len();
            let joined_len = rest.len().min(self.longest());
            carry.extend_from_slice(&rest[..joined_len]);
            let joined = std::mem::take(carry);
            let done = self.set.rewrite(&joined, false, &mut out, &mut |g| hits.push(g));
            if done < held {
                // Still undecided inside what was held, which happens only when the whole chunk
                // was joined (it is shorter than the longest pattern): hold the undecided rest.
                carry.extend_from_slice(&joined[done..]);
                self.record(hits);
                return [Bytes::from(out), Bytes::new()];
            }
            rest = rest.slice(done - held..);
            resolved = Bytes::from(std::mem::take(&mut out));
        }
        let (done, unchanged) = self.set.rewrite_until(&rest, false, &mut out, &mut |g| hits.push(g));
        self.record(hits);
        carry.extend_from_slice(&rest[done..]);
        if out.is_empty() {
            return [resolved, rest.slice(unchanged..done)];
        }
        out.extend_from_slice(&rest[unchanged..done]);
        [resolved, Bytes::from(out)]
    }

    /// The last streaming step: rewrites what `carry` still holds into `out`.
    pub fn finish(&self, carry: &mut Vec<u8>, out: &mut Vec<u8>) {
        let rest = std::mem::take(carry);
        out.extend_from_slice(&self.replace_all(&rest));
    }

    /// The longest pattern, in bytes: a needle or a masked echo.
    pub fn longest(&self) -> usize {
        self.set.longest
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
            assert!(rewriter.held() < subs.longest(), "holds back no more than a needle");
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
            assert!(rewriter.held() < subs.longest());
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

    /// Whether `chunk`, streamed with nothing held back, goes on at once as the same bytes (not a copy).
    fn passes_through(subs: &Substitutions, chunk: &'static [u8]) -> bool {
        let chunk = Bytes::from_static(chunk);
        let mut carry = Vec::new();
        let [first, out] = subs.push_bytes(&mut carry, chunk.clone());
        let out = if first.is_empty() { out } else { first };
        carry.is_empty() && out.as_ptr() == chunk.as_ptr() && out.len() == chunk.len()
    }

    #[test]
    fn an_empty_set_passes_everything_through() {
        let none = Substitutions::new(Vec::<(&[u8], &[u8])>::new());
        assert!(passes_through(&none, b"anything at all"));
        assert!(passes_through(&subs(), b"plain text"));
        assert!(!passes_through(&subs(), b"ends with stub_git"));
        assert!(!passes_through(&subs(), b"has stub_github_token_3fa91c0d inside"));
    }

    #[test]
    fn shared_chunks_stream_like_copied_ones() {
        let subs = scrubber();
        let input = format!("a {REAL} b sk-abcd1****wxyz c ...... d {REAL}").into_bytes();
        let expected = subs.replace_all(&input).into_owned();
        for piece in 1..=input.len() {
            let mut carry = Vec::new();
            let mut out = Vec::new();
            for chunk in input.chunks(piece) {
                for part in subs.push_bytes(&mut carry, Bytes::copy_from_slice(chunk)) {
                    out.extend_from_slice(&part);
                }
                assert!(carry.len() < subs.longest() + piece, "holds back a bounded tail");
            }
            subs.finish(&mut carry, &mut out);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected),
                "pieces of {piece}"
            );
        }
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

    const REAL: &str = "sk-abcd1234efgh5678ijkl9012wxyz";
    const STUB: &str = "stub_openai_api_key_11223344";

    fn scrubber() -> Substitutions {
        Substitutions::scrubbing(
            [
                (REAL, STUB),
                ("ghp_0123456789abcdefABCDEF0123456789abcd", "stub_github_token_3fa91c0d"),
            ],
            Vec::new(),
        )
    }

    #[test]
    fn encoded_real_values_are_scrubbed_across_every_chunk_boundary() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let subs = scrubber();
        let hex: String = REAL.bytes().map(|b| format!("{b:02X}")).collect();
        let json: String = REAL.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let inputs = [
            format!("{{\"b64\":\"{}\"}}", STANDARD.encode(format!("xy{REAL}z"))),
            format!("id={}&", URL_SAFE_NO_PAD.encode(format!("x{REAL}"))),
            format!("hex {hex} end"),
            format!("{{\"v\":\"{json}\"}}"),
            format!("rev {}", REAL.chars().rev().collect::<String>()),
            format!("pct {}", REAL.bytes().map(|b| format!("%{b:02x}")).collect::<String>()),
        ];
        for input in inputs {
            let whole = subs.replace_all(input.as_bytes()).into_owned();
            assert_ne!(whole, input.as_bytes(), "{input}");
            for piece in [1, 2, 3, 7, 64] {
                assert_eq!(
                    stream_in_pieces(&subs, input.as_bytes(), piece),
                    whole,
                    "{input} in {piece}s"
                );
            }
        }
        assert_eq!(subs.hits(), vec![0]);
    }

    #[test]
    fn masked_echoes_lose_their_real_characters() {
        let subs = scrubber();
        let cases = [
            // OpenAI's 401: the first eight and last four characters around a run of stars.
            (
                "Incorrect API key provided: sk-abcd1****wxyz. You can find",
                "Incorrect API key provided: stub_ope****3344. You can find",
            ),
            (
                "key sk-abcd1234ef\u{2022}\u{2022}\u{2022}",
                "key stub_openai_a\u{2022}\u{2022}\u{2022}",
            ),
            ("key ...........wxyz!", "key ...........3344!"),
            ("key sk-abcd1234xxxxxxxx", "key stub_openaixxxxxxxx"),
            ("key sk-abcd1234\u{2026}", "key stub_openai\u{2026}"),
            // Not echoes: too few real characters, too short a run.
            ("sk-****", "sk-****"),
            ("sk-a****", "stub****"),
            ("***xyz and ... and sk-abcd.", "***xyz and ... and sk-abcd."),
        ];
        for (input, expected) in cases {
            assert_eq!(
                String::from_utf8(subs.replace_all(input.as_bytes()).into_owned()).unwrap(),
                expected,
                "{input}"
            );
            for piece in 1..=input.len() {
                let out = stream_in_pieces(&subs, input.as_bytes(), piece);
                assert_eq!(String::from_utf8_lossy(&out), expected, "{input} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn an_undecided_mask_waits_only_until_the_next_character_decides_it() {
        let subs = scrubber();
        let mut rewriter = subs.stream();
        let mut out = Vec::new();
        rewriter.push(b"data: {\"t\":\"wait...", &mut out);
        assert_eq!(out, b"data: {\"t\":\"wait", "a run could still be a mask");
        rewriter.push(b"\"}\n\n", &mut out);
        assert_eq!(out, b"data: {\"t\":\"wait...\"}\n\n", "and goes out once it is not");
        assert!(passes_through(&subs, b"plain words, nothing else\n"));
    }

    #[test]
    fn scrub_sets_are_compiled_once_per_value_list() {
        let a = NeedleSet::scrubbing_cached([(REAL, STUB)]);
        let b = NeedleSet::scrubbing_cached([(REAL, STUB)]);
        assert!(Arc::ptr_eq(&a, &b));
        let c = NeedleSet::scrubbing_cached([(REAL, "stub_other_0000000000")]);
        assert!(!Arc::ptr_eq(&a, &c));
        // Hits are recorded per `Substitutions`, not per shared set.
        let (one, two) = (Substitutions::from_set(a), Substitutions::from_set(b));
        one.replace_all(REAL.as_bytes());
        assert_eq!((one.hits(), two.hits()), (vec![0], vec![]));
    }

    #[test]
    fn extra_pairs_follow_the_values_groups() {
        let subs = Substitutions::scrubbing([(REAL, STUB)], vec![(b"dG9rZW4=".to_vec(), b"c3R1Yg==".to_vec())]);
        assert_eq!(&*subs.replace_all(b"Basic dG9rZW4="), b"Basic c3R1Yg==");
        assert_eq!(subs.hits(), vec![1]);
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

    /// What finding wrapped base64 costs beside the rest of the scrubber, on bodies of 16 MiB in
    /// 16 KiB chunks, with the benchmark's credential shapes (five values, 40 to 164 bytes).
    #[test]
    #[ignore = "a measurement: cargo test --release --lib scrub_cost -- --ignored --nocapture"]
    fn scrub_cost_of_wrapped_base64() {
        use base64::Engine;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = |len: usize| -> String {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ALPHABET[(seed >> 33) as usize % ALPHABET.len()] as char
                })
                .collect()
        };
        let values: Vec<(String, String)> = [
            format!("ghp_{}", random(36)),
            format!("sk-proj-{}", random(156)),
            format!("sk-ant-api03-{}AA", random(93)),
            random(40),
            format!("xoxb-{}-{}-{}", random(12), random(13), random(24)),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, real)| (real, format!("stub_{i}_{}", random(16))))
        .collect();
        let with = Arc::new(NeedleSet::scrubbing(values.iter().map(|(r, s)| (r, s)), []));
        let mut plain = NeedleSet::scrubbing(values.iter().map(|(r, s)| (r, s)), []);
        plain.wrapped = None;
        let without = Arc::new(plain);
        const SIZE: usize = 16 << 20;
        let filler = random(SIZE / 2);
        let text: Vec<u8> = filler
            .as_bytes()
            .chunks(57)
            .flat_map(|line| [line, b" and so on\n"].concat())
            .take(SIZE)
            .collect();
        let wrapped: Vec<u8> = base64::engine::general_purpose::STANDARD
            .encode(&filler.as_bytes()[..SIZE / 2])
            .as_bytes()
            .chunks(76)
            .flat_map(|line| [line, b"\r\n"].concat())
            .take(SIZE)
            .collect();
        let bodies = [
            ("x", vec![b'x'; SIZE]),
            ("text lines", text),
            ("base64, 76 CRLF", wrapped),
        ];
        for (name, body) in &bodies {
            let body = Bytes::from(body.clone());
            for (label, set) in [("without", &without), ("with", &with)] {
                let subs = Substitutions::from_set(set.clone());
                let started = std::time::Instant::now();
                let mut carry = Vec::new();
                let mut bytes = 0;
                for at in (0..body.len()).step_by(16 << 10) {
                    for part in subs.push_bytes(&mut carry, body.slice(at..(at + (16 << 10)).min(body.len()))) {
                        bytes += part.len();
                    }
                }
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "{name:>16} {label:>7}: {:7.0} MB/s ({bytes} bytes)",
                    body.len() as f64 / secs / 1e6
                );
            }
        }
    }
}
