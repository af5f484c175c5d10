//! Finding any of a few hundred literal needles in a body at close to memory speed.
//!
//! The vault looks for every routine encoding of every credential in every body that passes it
//! ([`super::encodings`]): a few hundred needles, most of them long (a real key in `\uXXXX` escapes
//! is six bytes a character). An Aho-Corasick automaton over such a set has no prefilter to lean
//! on and steps through every byte; that made scrubbing the bottleneck of the vault. [`Matcher`]
//! instead samples: with `m` the shortest long needle, every occurrence of a needle covers one of
//! the positions `0, s, 2s, …` (step `s = m - GRAM + 1`) with its first `m` bytes, so looking up
//! the [`GRAM`]-byte window at those positions alone — in a bitmap, then a map of which needle has
//! that window at which offset — finds every candidate, and each candidate is confirmed by a
//! comparison. A body is touched once every `s` bytes. Needles shorter than [`SAMPLED_MIN`] (real
//! values that short are rare) go to an Aho-Corasick automaton of their own.
//!
//! Matches are leftmost-longest, as the automaton's: of the needles occurring at or after a
//! position, one starting first, and of those the longest (the earliest-added on a tie).

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, Input, MatchKind};

/// Bytes of the window looked up at each sampled position.
pub const GRAM: usize = 8;
/// Needles at least this long are found by sampling; shorter ones by an automaton.
pub const SAMPLED_MIN: usize = 16;
/// Bits of the first-stage filter of windows (a bitmap of 2^16 bits, 8 KiB).
const FILTER_BITS: u32 = 16;

/// One needle found: `start..end` of the haystack, and the needle's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub id: usize,
}

/// A leftmost-longest matcher of literal needles.
pub struct Matcher {
    /// Needles shorter than [`SAMPLED_MIN`], and the index of each among all needles.
    short: Option<(AhoCorasick, Vec<usize>)>,
    long: Option<Sampled>,
}

/// The long needles' sampling index.
struct Sampled {
    needles: Vec<Vec<u8>>,
    /// The index of each long needle among all needles.
    ids: Vec<usize>,
    step: usize,
    /// Which windows (hashed) begin the `step` sampled windows of some needle.
    filter: Box<[u64]>,
    /// Each such window: the needles that hold it, and where.
    windows: HashMap<u64, Vec<(u32, u32)>>,
}

impl Matcher {
    /// A matcher of `needles` (empty ones are never found).
    pub fn new(needles: &[Vec<u8>]) -> Self {
        let (mut short, mut short_ids, mut long, mut long_ids) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, needle) in needles.iter().enumerate() {
            if needle.is_empty() {
                continue;
            }
            if needle.len() < SAMPLED_MIN {
                short.push(needle.clone());
                short_ids.push(id);
            } else {
                long.push(needle.clone());
                long_ids.push(id);
            }
        }
        let short = (!short.is_empty()).then(|| {
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&short)
                .expect("literal needles always build");
            (automaton, short_ids)
        });
        let long = (!long.is_empty()).then(|| Sampled::new(long, long_ids));
        Self { short, long }
    }

    /// Whether it has no needle at all.
    pub fn is_empty(&self) -> bool {
        self.short.is_none() && self.long.is_none()
    }

    /// The leftmost-longest needle lying wholly in `hay` and starting at or after `from`.
    pub fn find(&self, hay: &[u8], from: usize) -> Option<Found> {
        let short = self.short.as_ref().and_then(|(automaton, ids)| {
            let m = automaton.find(Input::new(hay).span(from..hay.len()))?;
            Some(Found {
                start: m.start(),
                end: m.end(),
                id: ids[m.pattern().as_usize()],
            })
        });
        // A long needle is looked for only where it would come before the short one found.
        let until = short.map_or(hay.len(), |s| s.start);
        let long = self.long.as_ref().and_then(|sampled| sampled.find(hay, from, until));
        match (short, long) {
            (Some(s), Some(l)) if l.start < s.start || (l.start == s.start && l.end > s.end) => Some(l),
            (Some(s), _) => Some(s),
            (None, l) => l,
        }
    }

    pub fn is_match(&self, hay: &[u8]) -> bool {
        self.find(hay, 0).is_some()
    }
}

impl Sampled {
    fn new(needles: Vec<Vec<u8>>, ids: Vec<usize>) -> Self {
        let shortest = needles.iter().map(Vec::len).min().expect("at least one needle");
        let step = shortest - GRAM + 1;
        let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)].into_boxed_slice();
        let mut windows: HashMap<u64, Vec<(u32, u32)>> = HashMap::new();
        for (i, needle) in needles.iter().enumerate() {
            for offset in 0..step {
                let window = window_at(needle, offset);
                let bit = filter_bit(window);
                filter[bit / 64] |= 1 << (bit % 64);
                windows.entry(window).or_default().push((i as u32, offset as u32));
            }
        }
        Self {
            needles,
            ids,
            step,
            filter,
            windows,
        }
    }

    /// The leftmost-longest needle wholly in `hay` starting in `from..until`, or at `until` when
    /// it is longer than one ending there would be (the caller compares).
    fn find(&self, hay: &[u8], from: usize, until: usize) -> Option<Found> {
        let step = self.step;
        // A needle starting at `a` is seen at the first sampled position at or after `a`.
        let mut at = from.div_ceil(step) * step;
        while at + GRAM <= hay.len() && at < until + step {
            let window = window_at(hay, at);
            let bit = filter_bit(window);
            if self.filter[bit / 64] & (1 << (bit % 64)) != 0
                && let Some(found) = self.confirm(hay, window, at, from)
            {
                return Some(found);
            }
            at += step;
        }
        None
    }

    /// The leftmost-longest needle that holds `window` at some offset, placed so that it sits at
    /// `at`, starts at or after `from` and lies wholly in `hay`.
    fn confirm(&self, hay: &[u8], window: u64, at: usize, from: usize) -> Option<Found> {
        let mut best: Option<Found> = None;
        for &(i, offset) in self.windows.get(&window)? {
            let Some(start) = at.checked_sub(offset as usize).filter(|&s| s >= from) else {
                continue;
            };
            let needle = &self.needles[i as usize];
            if !hay[start..].starts_with(needle) {
                continue;
            }
            let found = Found {
                start,
                end: start + needle.len(),
                id: self.ids[i as usize],
            };
            let better = best.is_none_or(|b| {
                found.start < b.start
                    || (found.start == b.start && (found.end > b.end || (found.end == b.end && found.id < b.id)))
            });
            if better {
                best = Some(found);
            }
        }
        best
    }
}

fn window_at(bytes: &[u8], at: usize) -> u64 {
    let mut window = [0u8; GRAM];
    window.copy_from_slice(&bytes[at..at + GRAM]);
    u64::from_le_bytes(window)
}

fn filter_bit(window: u64) -> usize {
    (window.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FILTER_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leftmost-longest by brute force.
    fn naive(needles: &[Vec<u8>], hay: &[u8], from: usize) -> Option<Found> {
        (from..hay.len()).find_map(|start| {
            needles
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.is_empty() && hay[start..].starts_with(n))
                .max_by(|(i, a), (j, b)| a.len().cmp(&b.len()).then(j.cmp(i)))
                .map(|(id, n)| Found {
                    start,
                    end: start + n.len(),
                    id,
                })
        })
    }

    #[test]
    fn finds_what_a_brute_force_search_finds() {
        let needles: Vec<Vec<u8>> = [
            "sk-abcdefghijklmnopqrstuvwxyz012345",
            "sk-abcdefghijklmnopq",
            "c2stYWJjZGVmZ2hpamtsbW5vcHFy",
            "short",
            "shor",
            "73 6b 2d 61 62 63 64 65 66 67",
            "0123456789abcdef0123",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let matcher = Matcher::new(&needles);
        let hays = [
            "nothing to see here, move along please, nothing at all".to_string(),
            "x sk-abcdefghijklmnopqrstuvwxyz012345 y sk-abcdefghijklmnopq z".to_string(),
            "a short sk-abcdefghijklmnopqrstuvwxyz01234 shor c2stYWJjZGVmZ2hpamtsbW5vcHFy".to_string(),
            format!("{}0123456789abcdef0123{}", "-".repeat(37), "+".repeat(5)),
            "0123456789abcdef0123".to_string(),
            "0123456789abcdef012".to_string(),
        ];
        for hay in hays {
            for from in 0..hay.len() {
                assert_eq!(
                    matcher.find(hay.as_bytes(), from),
                    naive(&needles, hay.as_bytes(), from),
                    "{hay:?} from {from}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Over a two-letter alphabet needles overlap, nest and repeat as much as they can.
        #[test]
        fn agrees_with_brute_force_on_overlapping_needles(
            needles in proptest::collection::vec(proptest::collection::vec(proptest::sample::select(b"ab".to_vec()), 1..40), 1..12),
            hay in proptest::collection::vec(proptest::sample::select(b"ab".to_vec()), 0..300),
            from in 0usize..300,
        ) {
            let from = from.min(hay.len());
            proptest::prop_assert_eq!(Matcher::new(&needles).find(&hay, from), naive(&needles, &hay, from));
        }
    }

    #[test]
    fn a_needle_at_every_offset_is_found() {
        let needle = b"ghp_0123456789abcdefABCDEF0123456789abcd".to_vec();
        let matcher = Matcher::new(std::slice::from_ref(&needle));
        for offset in 0..100 {
            let mut hay = vec![b'.'; offset];
            hay.extend_from_slice(&needle);
            hay.extend_from_slice(b" tail");
            let found = matcher.find(&hay, 0).expect("found");
            assert_eq!((found.start, found.end), (offset, offset + needle.len()));
            hay.truncate(offset + needle.len() - 1);
            assert_eq!(matcher.find(&hay, 0), None, "a cut needle is no match");
        }
    }
}
