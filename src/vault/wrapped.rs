//! Base64 wrapped across lines: where a real value's base64 form is split by line breaks, as MIME
//! (76 columns, CRLF), PEM (64, LF) and GitHub's contents API (60, LF, inside a JSON string, so
//! each break is the two characters `\n`) hand a stored value back.
//!
//! The scrub set's needles are literal ([`super::encodings`]), and a line break inside a wrapped
//! value splits its base64 form into pieces no needle matches. Spelling out every split as a needle
//! would multiply the set a hundredfold and slow the matcher for every body; instead the breaks are
//! looked at one by one:
//! - [`Wrapped::scan`] finds every line break of a text — `\r\n`, `\n`, and the JSON-escaped `\r\n`
//!   and `\n` — with one `memchr2` pass, and keeps only the breaks that may split a real value's
//!   base64 form: the four characters just before or just after the break must be four consecutive
//!   characters of such a form (its [`GRAM`]s, checked in a bitmap, then a sorted list). In text
//!   that holds no real value nearly no break passes, so the cost is the pass and a lookup per line.
//! - Around each break kept, [`dewrap`] reads a window of the text without its line breaks, and
//!   the caller (the scrubber, [`super::rewrite`]) matches it with the scrub set's own matcher; a
//!   match that spans a removed break is a wrapped occurrence. Its replacement is written with the
//!   same line breaks put back at the same distances from its start ([`rewrap`]; at its end when
//!   the replacement is shorter), so the blob keeps its shape and decodes to the stub.
//! - Streaming: [`Scan::hold`] says how far back a chunk's end must be held when a break near it
//!   may begin or continue a wrapped value that the next chunk completes; at most [`Wrapped::held`]
//!   bytes, bounded by the longest form.
//!
//! Any line width is recognised (lines of at least [`GRAM`] characters), in both alphabets, at the
//! three byte alignments, with any of the four breaks. As in one line, the one or two characters at
//! each edge of a value's form, which mix its bits with its neighbours', are left as they are.

use std::ops::Range;

/// Characters on either side of a line break compared with the forms' grams.
pub const GRAM: usize = 4;
/// Bits of the first-stage filter of grams (a bitmap of 2^16 bits, 8 KiB).
const FILTER_BITS: u32 = 16;

/// A line break inside a wrapped blob, as bytes on the wire: raw (MIME's CRLF, PEM's LF) or
/// JSON-escaped (inside a JSON string).
const BREAKS: [&[u8]; 4] = [b"\r\n", b"\n", b"\\r\\n", b"\\n"];

/// The length of the line break `text` begins with, if any.
pub fn break_len(text: &[u8]) -> Option<usize> {
    BREAKS.iter().find(|b| text.starts_with(b)).map(|b| b.len())
}

/// Whether `text` (shorter than the longest break) could be the start of a line break.
fn partial_break(text: &[u8]) -> bool {
    !text.is_empty() && BREAKS.iter().any(|b| b.len() > text.len() && b.starts_with(text))
}

/// The base64 forms of the real values: what a line break is checked against.
pub struct Wrapped {
    filter: Box<[u64]>,
    grams: Vec<u32>,
    /// Each form's first characters (up to [`GRAM`] - 1), for a break fewer than [`GRAM`]
    /// characters into a form, at the end of a chunk.
    heads: Vec<Vec<u8>>,
    /// The longest form, in characters.
    reach: usize,
}

/// What [`Wrapped::scan`] found in a text.
pub struct Scan {
    /// The breaks (their byte ranges) that may split a form, in order.
    pub breaks: Vec<Range<usize>>,
    /// Where the text must be held back from when more follows: a wrapped form may begin before
    /// it and end in the next chunk (the text's length when nothing need be held).
    pub hold: usize,
}

impl Wrapped {
    /// The breaks of `forms` (each a base64 form of a real value, its stable middle and ends);
    /// `None` when there is none to look for.
    pub fn new(forms: impl IntoIterator<Item = Vec<u8>>) -> Option<Self> {
        let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)].into_boxed_slice();
        let mut grams = Vec::new();
        let mut heads = Vec::new();
        let mut reach = 0;
        for form in forms {
            if form.len() <= GRAM {
                continue;
            }
            reach = reach.max(form.len());
            for window in form.windows(GRAM) {
                let gram = gram_of(window);
                let bit = filter_bit(gram);
                filter[bit / 64] |= 1 << (bit % 64);
                grams.push(gram);
            }
            heads.push(form[..GRAM - 1].to_vec());
        }
        if grams.is_empty() {
            return None;
        }
        grams.sort_unstable();
        grams.dedup();
        heads.sort();
        heads.dedup();
        Some(Self {
            filter,
            grams,
            heads,
            reach,
        })
    }

    /// How far on either side of a break a wrapped form may reach, in bytes: its characters, and
    /// a break at most every [`GRAM`] of them.
    pub fn window(&self) -> usize {
        2 * self.reach
    }

    /// The most a chunk's end is ever held back for a wrapped form ([`Scan::hold`]).
    pub fn held(&self) -> usize {
        2 * self.window() + 8
    }

    fn has(&self, chars: &[u8]) -> bool {
        let gram = gram_of(chars);
        let bit = filter_bit(gram);
        self.filter[bit / 64] & (1 << (bit % 64)) != 0 && self.grams.binary_search(&gram).is_ok()
    }

    /// Where a form that a break at `start` splits fewer than [`GRAM`] characters in would begin:
    /// the earliest of the last `GRAM - 1` characters before it that begin a form, if any does
    /// and the line before the break is base64 (its last `2 * GRAM` characters, or as many as
    /// there are): a line of prose that ends in a form's first letter is not held back.
    fn head_before(&self, text: &[u8], start: usize) -> Option<usize> {
        if !text[start.saturating_sub(2 * GRAM)..start]
            .iter()
            .all(|&c| is_base64(c))
        {
            return None;
        }
        (1..GRAM)
            .rev()
            .filter_map(|k| start.checked_sub(k))
            .find(|&s| self.heads.iter().any(|h| h.starts_with(&text[s..start])))
    }

    /// The line breaks of `text` that may split a form, and how much of its end to hold back
    /// when `last` is false (more text follows).
    pub fn scan(&self, text: &[u8], last: bool) -> Scan {
        let n = text.len();
        let mut breaks: Vec<Range<usize>> = Vec::new();
        let mut hold = n;
        for i in memchr::memchr2_iter(b'\n', b'\\', text) {
            let (start, end) = if text[i] == b'\n' {
                (if i > 0 && text[i - 1] == b'\r' { i - 1 } else { i }, i + 1)
            } else {
                match break_len(&text[i..]) {
                    Some(len) => (i, i + len),
                    // The chunk may end inside a JSON-escaped break.
                    None if !last && partial_break(&text[i..]) => (i, n),
                    None => continue,
                }
            };
            if breaks.last().is_some_and(|b| b.end > start) {
                continue;
            }
            let before = start.checked_sub(GRAM).map(|s| &text[s..start]);
            let after = text.get(end..end + GRAM);
            let split = before.is_some_and(|b| self.has(b)) || after.is_some_and(|a| self.has(a));
            if split {
                breaks.push(start..end);
            }
            if last || end + self.window() < n {
                continue;
            }
            // Near the end: a form split here may go on in the next chunk. It begins up to a
            // window before the break when the characters before it are a form's, fewer than
            // `GRAM` before it otherwise.
            if before.is_some_and(|b| self.has(b)) {
                hold = hold.min(start.saturating_sub(self.window()));
            } else if (split || after.is_none())
                && let Some(head) = self.head_before(text, start)
            {
                hold = hold.min(head);
            }
        }
        // A chunk that ends in a raw `\r`: the break's `\n` may come next.
        if !last && n > 0 && text[n - 1] == b'\r' {
            let start = n - 1;
            if start.checked_sub(GRAM).is_some_and(|s| self.has(&text[s..start])) {
                hold = hold.min(start.saturating_sub(self.window()));
            } else if let Some(head) = self.head_before(text, start) {
                hold = hold.min(head);
            }
        }
        Scan { breaks, hold }
    }
}

/// A stretch of text read without its line breaks.
pub struct Dewrapped {
    /// The characters, breaks removed.
    pub text: Vec<u8>,
    /// Where each character of `text` is in the original.
    pub at: Vec<usize>,
    /// Each removed break: the position in `text` it preceded, and its bytes in the original.
    pub breaks: Vec<(usize, Range<usize>)>,
}

/// `text[range]` without its line breaks.
pub fn dewrap(text: &[u8], range: Range<usize>) -> Dewrapped {
    let mut out = Dewrapped {
        text: Vec::with_capacity(range.len()),
        at: Vec::with_capacity(range.len()),
        breaks: Vec::new(),
    };
    let mut i = range.start;
    while i < range.end {
        if let Some(len) = break_len(&text[i..range.end]) {
            out.breaks.push((out.text.len(), i..i + len));
            i += len;
        } else {
            out.text.push(text[i]);
            out.at.push(i);
            i += 1;
        }
    }
    out
}

/// `replacement` with the line breaks `breaks` (each: how many characters of the original come
/// before it, and its bytes) put back at the same distances from its start, or at its end when it
/// is shorter.
pub fn rewrap(replacement: &[u8], breaks: &[(usize, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(replacement.len() + breaks.iter().map(|(_, b)| b.len()).sum::<usize>());
    let mut done = 0;
    for &(before, bytes) in breaks {
        let cut = before.clamp(done, replacement.len());
        out.extend_from_slice(&replacement[done..cut]);
        out.extend_from_slice(bytes);
        done = cut;
    }
    out.extend_from_slice(&replacement[done..]);
    out
}

/// Whether `c` is a character of either base64 alphabet.
fn is_base64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_')
}

fn gram_of(chars: &[u8]) -> u32 {
    u32::from_le_bytes([chars[0], chars[1], chars[2], chars[3]])
}

fn filter_bit(gram: u32) -> usize {
    (gram.wrapping_mul(0x9e37_79b9) >> (32 - FILTER_BITS)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_raw_and_json_escaped() {
        assert_eq!(break_len(b"\r\nx"), Some(2));
        assert_eq!(break_len(b"\nx"), Some(1));
        assert_eq!(break_len(b"\\r\\nx"), Some(4));
        assert_eq!(break_len(b"\\nx"), Some(2));
        assert_eq!(break_len(b"\\tx"), None);
        assert!(partial_break(b"\\") && partial_break(b"\\r") && partial_break(b"\\r\\"));
        assert!(!partial_break(b"\\t"));
    }

    #[test]
    fn dewrap_and_rewrap_keep_the_breaks_where_they_were() {
        let text = b"ab\ncd\\nef\r\ngh";
        let d = dewrap(text, 0..text.len());
        assert_eq!(d.text, b"abcdefgh");
        assert_eq!(d.at, vec![0, 1, 3, 4, 7, 8, 11, 12]);
        let breaks: Vec<(usize, &[u8])> = d.breaks.iter().map(|(p, r)| (*p, &text[r.clone()])).collect();
        assert_eq!(rewrap(b"ABCDEFGH", &breaks), b"AB\nCD\\nEF\r\nGH");
        // A shorter replacement takes the breaks past its end at its end.
        assert_eq!(rewrap(b"ABC", &breaks), b"AB\nC\\n\r\n");
    }

    #[test]
    fn only_breaks_beside_a_forms_characters_are_kept() {
        let form = b"Z2hwX1JlYWxUb2tlbjEyMzQ1Njc4OTA".to_vec();
        let wrapped = Wrapped::new([form]).unwrap();
        // Split after 10 characters, and after 2 (only the gram after the break is the form's).
        for text in [
            &b"{\"c\":\"xxZ2hwX1JlYW\\nxUb2tlbjEyMzQ1Njc4OTAyy\"}"[..],
            b"..Z2\nhwX1JlYWxUb2tl..",
        ] {
            let scan = wrapped.scan(text, true);
            assert_eq!(scan.breaks.len(), 1, "{}", String::from_utf8_lossy(text));
        }
        let prose = b"a line of text\nanother line\r\nand {\"json\": \"with\\nbreaks\"}\nends in Z\n";
        let scan = wrapped.scan(prose, false);
        assert!(scan.breaks.is_empty());
        assert_eq!(scan.hold, prose.len(), "nothing held back");
    }

    #[test]
    fn a_chunk_ending_near_a_split_form_is_held_back() {
        let wrapped = Wrapped::new([b"Z2hwX1JlYWxUb2tlbjEyMzQ1Njc4OTA".to_vec()]).unwrap();
        for text in [
            &b"header\nxxZ2hwX1JlYW\n"[..],
            b"header\nxxZ2hwX1JlYW\r",
            b"header\nxxZ2hwX1JlYW\\",
            b"header\nxxZ2hwX1JlYW\\r\\",
            b"header\nAAAAAAAAxxZ2\nhw",
            b"header\nAAAAAAAAxxZ\n",
        ] {
            let scan = wrapped.scan(text, false);
            assert!(
                scan.hold <= 17,
                "{}: held from {}",
                String::from_utf8_lossy(text),
                scan.hold
            );
            assert!(text.len() - scan.hold <= wrapped.held());
            assert_eq!(wrapped.scan(text, true).hold, text.len());
        }
    }
}
