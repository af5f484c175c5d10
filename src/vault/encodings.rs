//! The routine encoded forms of a value, as literal needles: what a server that stored a real
//! credential may hand it back as, and what a stub may be disguised as on its way out.
//!
//! The vault matches bytes, not meanings, so every encoding a server routinely applies to a stored
//! string is spelled out here as its own needle, paired with the *same* encoding of the replacement:
//! a real value scrubbed from base64 comes back as the stub in base64, in the same place.
//!
//! - **Literal.**
//! - **Base64**, standard (`+/`) and URL-safe (`-_`) alphabets, at each of the three byte alignments.
//!   Inside a larger base64 blob a value starts at offset 0, 1 or 2 of a 3-byte group; only the
//!   characters whose 6 bits all come from the value are the same wherever the value sits (its
//!   *stable middle*), so that is the needle. The characters at the two edges mix the value's first
//!   or last 2-4 bits with the neighbouring bytes and are left as they are: at most 4 bits of each
//!   end survive a scrub. Where the value ends the blob, the forms with its final (zero-filled)
//!   character, without and with `=` padding, are needles too, so a value encoded on its own is
//!   replaced by the stub encoded on its own, and decodes to it.
//! - **Hex**, lower and upper case.
//! - **Percent-encoding**: every byte as `%XX` (upper and lower hex), and the minimal forms in which
//!   only reserved characters are encoded, for the safe sets common encoders use (RFC 3986
//!   unreserved; plus `/`, as Python's `quote`; plus `!'()*`, as JavaScript's `encodeURIComponent`;
//!   plus the URI delimiters, as `encodeURI`; HTML form encoding, with a space as `+`).
//! - **JSON string escapes**: every character as `\uXXXX` (lower and upper hex, surrogate pairs past
//!   the BMP), and the minimal escapes (`\"`, `\\`, control characters) with `/` as `\/` (PHP) and
//!   with `<`, `>`, `&`, `'` as `\u003c`… (Go's HTML-safe encoder).
//! - **Reversed**, by character.
//!
//! Forms that come out equal (a value of letters and digits percent-encodes to itself) are one
//! needle. Encoded forms are made only for values of at least [`MIN_ENCODED_LEN`] bytes: the
//! encodings of a short value are short runs of very common characters (the hex of three bytes is
//! six hex digits, any commit hash holds some), and replacing those would corrupt unrelated data
//! without protecting anything a short value could keep secret. The literal form is always made.
//!
//! What is not here cannot be recognised by a matcher: a value split across fields, compressed
//! inside a binary format, encrypted, or transformed in any other way. Keeping a real value from
//! being *put* where a server stores it (injection points) is what covers those.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Values shorter than this (in bytes) get only their literal form; see the module doc.
pub const MIN_ENCODED_LEN: usize = 8;

/// A base64 alphabet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alphabet {
    /// `+` and `/` (RFC 4648 §4).
    Standard,
    /// `-` and `_` (RFC 4648 §5).
    UrlSafe,
}

/// How a base64 form ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Only the stable middle: the value is followed by more data.
    Middle,
    /// The value ends the blob, which is not padded.
    Unpadded,
    /// The value ends the blob, which is padded with `=`.
    Padded,
}

/// Hex digit case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Lower,
    Upper,
}

/// Which characters a percent-encoder leaves as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PercentKeep {
    /// None: every byte is `%XX`.
    Nothing,
    /// RFC 3986 unreserved: letters, digits, `-._~`.
    Unreserved,
    /// Unreserved plus `/` (Python's `urllib.parse.quote`).
    Path,
    /// Unreserved plus `!'()*` (JavaScript's `encodeURIComponent`).
    Component,
    /// `encodeURIComponent`'s set plus the URI delimiters `;,/?:@&=+$#` (JavaScript's `encodeURI`).
    Uri,
    /// `application/x-www-form-urlencoded` (WHATWG): letters, digits, `*-._`, a space as `+`.
    Form,
}

/// Which characters a JSON encoder escapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonEscape {
    /// Every character as `\uXXXX`.
    Every(Case),
    /// The minimal escapes, plus `/` as `\/` when `slash`, plus `<>&'` as `\u003c`… when `html`.
    Minimal { slash: bool, html: bool },
}

/// One routine encoding of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Literal,
    /// `offset`: where the value starts in a 3-byte group (0, 1 or 2).
    Base64 {
        alphabet: Alphabet,
        offset: u8,
        end: End,
    },
    Hex(Case),
    Percent {
        keep: PercentKeep,
        case: Case,
    },
    Json(JsonEscape),
    Reversed,
}

impl Encoding {
    /// Every encoding, the literal first.
    pub fn all() -> Vec<Encoding> {
        let mut all = vec![Encoding::Literal];
        for alphabet in [Alphabet::Standard, Alphabet::UrlSafe] {
            for offset in 0..3 {
                for end in [End::Padded, End::Unpadded, End::Middle] {
                    all.push(Encoding::Base64 { alphabet, offset, end });
                }
            }
        }
        all.extend([Encoding::Hex(Case::Lower), Encoding::Hex(Case::Upper)]);
        for keep in [
            PercentKeep::Nothing,
            PercentKeep::Unreserved,
            PercentKeep::Path,
            PercentKeep::Component,
            PercentKeep::Uri,
            PercentKeep::Form,
        ] {
            for case in [Case::Upper, Case::Lower] {
                all.push(Encoding::Percent { keep, case });
            }
        }
        all.extend([
            Encoding::Json(JsonEscape::Every(Case::Lower)),
            Encoding::Json(JsonEscape::Every(Case::Upper)),
        ]);
        for slash in [false, true] {
            for html in [false, true] {
                all.push(Encoding::Json(JsonEscape::Minimal { slash, html }));
            }
        }
        all.push(Encoding::Reversed);
        all
    }

    /// `value` in this encoding, as it appears inside a larger text; `None` when the encoding does
    /// not apply (JSON escapes of bytes that are not UTF-8, a base64 alignment with no stable
    /// character).
    pub fn encode(self, value: &[u8]) -> Option<Vec<u8>> {
        match self {
            Encoding::Literal => Some(value.to_vec()),
            Encoding::Base64 { alphabet, offset, end } => base64_form(value, alphabet, offset, end),
            Encoding::Hex(case) => Some(hex(value, case)),
            Encoding::Percent { keep, case } => Some(percent(value, keep, case)),
            Encoding::Json(escape) => json(value, escape),
            Encoding::Reversed => Some(reversed(value)),
        }
    }
}

/// `(value in encoding E, replacement in encoding E)` for every routine encoding E: what scrubbing
/// `value` to `replacement` replaces. The literal pair comes first; duplicate needles are dropped
/// (the first kept); encoded forms only for values of at least [`MIN_ENCODED_LEN`] bytes.
pub fn pairs(value: &[u8], replacement: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    if value.is_empty() {
        return out;
    }
    for encoding in applicable(value) {
        let Some(needle) = encoding.encode(value) else {
            continue;
        };
        if needle.is_empty() || out.iter().any(|(n, _)| *n == needle) {
            continue;
        }
        // A replacement the encoding cannot express (JSON escapes of non-UTF-8 bytes) goes in as it
        // is: the real value must go either way.
        let with = encoding.encode(replacement).unwrap_or_else(|| replacement.to_vec());
        out.push((needle, with));
    }
    out
}

/// Every routine encoded form of `value` (the literal first, no duplicates): what recognises a stub
/// however it is disguised.
pub fn forms(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    if value.is_empty() {
        return out;
    }
    for encoding in applicable(value) {
        if let Some(needle) = encoding.encode(value)
            && !needle.is_empty()
            && !out.contains(&needle)
        {
            out.push(needle);
        }
    }
    out
}

fn applicable(value: &[u8]) -> Vec<Encoding> {
    if value.len() < MIN_ENCODED_LEN {
        vec![Encoding::Literal]
    } else {
        Encoding::all()
    }
}

fn base64_form(value: &[u8], alphabet: Alphabet, offset: u8, end: End) -> Option<Vec<u8>> {
    let offset = usize::from(offset % 3);
    let mut aligned = vec![0u8; offset];
    aligned.extend_from_slice(value);
    let engine = match alphabet {
        Alphabet::Standard => &STANDARD_NO_PAD,
        Alphabet::UrlSafe => &URL_SAFE_NO_PAD,
    };
    // Character i holds bits [6i, 6i+6) of `aligned`; the value holds bits [8·offset, 8·len).
    let encoded = engine.encode(&aligned).into_bytes();
    let first = (8 * offset).div_ceil(6);
    let stable_end = 8 * aligned.len() / 6;
    let last = match end {
        End::Middle => stable_end,
        End::Unpadded | End::Padded => encoded.len(),
    };
    if first >= last {
        return None;
    }
    let mut form = encoded[first..last].to_vec();
    if end == End::Padded {
        form.resize(form.len() + (3 - aligned.len() % 3) % 3, b'=');
    }
    Some(form)
}

fn hex_digits(case: Case) -> &'static [u8; 16] {
    match case {
        Case::Lower => b"0123456789abcdef",
        Case::Upper => b"0123456789ABCDEF",
    }
}

fn hex(value: &[u8], case: Case) -> Vec<u8> {
    let digits = hex_digits(case);
    value
        .iter()
        .flat_map(|&b| [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]])
        .collect()
}

fn percent(value: &[u8], keep: PercentKeep, case: Case) -> Vec<u8> {
    let digits = hex_digits(case);
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        let unreserved = b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        let kept = match keep {
            PercentKeep::Nothing => false,
            PercentKeep::Unreserved => unreserved,
            PercentKeep::Path => unreserved || b == b'/',
            PercentKeep::Component => unreserved || b"!'()*".contains(&b),
            PercentKeep::Uri => unreserved || b"!'()*;,/?:@&=+$#".contains(&b),
            PercentKeep::Form => b.is_ascii_alphanumeric() || b"*-._".contains(&b),
        };
        if kept {
            out.push(b);
        } else if keep == PercentKeep::Form && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]]);
        }
    }
    out
}

fn json(value: &[u8], escape: JsonEscape) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let mut out = Vec::with_capacity(value.len() * 6);
    let unit = |out: &mut Vec<u8>, u: u16, case: Case| {
        let digits = hex_digits(case);
        out.extend_from_slice(b"\\u");
        for shift in [12, 8, 4, 0] {
            out.push(digits[usize::from((u >> shift) & 0xf)]);
        }
    };
    for c in text.chars() {
        match escape {
            JsonEscape::Every(case) => {
                let mut units = [0u16; 2];
                for &u in c.encode_utf16(&mut units).iter() {
                    unit(&mut out, u, case);
                }
            }
            JsonEscape::Minimal { slash, html } => match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '/' if slash => out.extend_from_slice(b"\\/"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '<' | '>' | '&' | '\'' if html => unit(&mut out, c as u16, Case::Lower),
                c if (c as u32) < 0x20 => unit(&mut out, c as u16, Case::Lower),
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            },
        }
    }
    Some(out)
}

fn reversed(value: &[u8]) -> Vec<u8> {
    match std::str::from_utf8(value) {
        Ok(text) => text.chars().rev().collect::<String>().into_bytes(),
        Err(_) => value.iter().rev().copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    use super::*;

    const REAL: &[u8] = b"ghp_R3alT0ken/With+Odd~Chars?x=1";
    const STUB: &[u8] = b"stub_github_token_3fa91c0d";

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Replaces every needle of `pairs` in `text`, longest first at each position (what the scrubber
    /// does).
    fn scrub(text: &[u8], pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let best = pairs
                .iter()
                .filter(|(n, _)| text[i..].starts_with(n))
                .max_by_key(|(n, _)| n.len());
            match best {
                Some((n, r)) => {
                    out.extend_from_slice(r);
                    i += n.len();
                }
                None => {
                    out.push(text[i]);
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn the_literal_pair_comes_first() {
        let pairs = pairs(REAL, STUB);
        assert_eq!(pairs[0], (REAL.to_vec(), STUB.to_vec()));
        assert_eq!(forms(REAL)[0], REAL);
    }

    #[test]
    fn base64_is_found_at_every_offset_of_a_larger_blob_in_both_alphabets() {
        let pairs = pairs(REAL, STUB);
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            for before in 0..6 {
                for after in 0..6 {
                    let mut plain = b"{\"content\":\"".to_vec();
                    plain.truncate(before);
                    plain.extend_from_slice(REAL);
                    plain.extend_from_slice(&b"\"}\n..."[..after]);
                    let blob = engine.encode(&plain).into_bytes();
                    let scrubbed = scrub(&blob, &pairs);
                    assert_ne!(scrubbed, blob, "before {before}, after {after}");
                    // Every stable middle of the real value is gone, so decoding yields no trace of
                    // it beyond a few bits at either edge.
                    for offset in 0..3 {
                        let middle = base64_form(REAL, Alphabet::Standard, offset, End::Middle).unwrap();
                        assert!(!contains(&scrubbed, &middle));
                        let middle = base64_form(REAL, Alphabet::UrlSafe, offset, End::Middle).unwrap();
                        assert!(!contains(&scrubbed, &middle));
                    }
                    let stub_middle = base64_form(STUB, Alphabet::Standard, (before % 3) as u8, End::Middle).unwrap();
                    let stub_middle_url =
                        base64_form(STUB, Alphabet::UrlSafe, (before % 3) as u8, End::Middle).unwrap();
                    assert!(contains(&scrubbed, &stub_middle) || contains(&scrubbed, &stub_middle_url));
                }
            }
        }
    }

    #[test]
    fn a_value_encoded_alone_comes_back_as_the_stub_encoded_alone() {
        let pairs = pairs(REAL, STUB);
        for (engine, pad) in [(&STANDARD, true), (&URL_SAFE, true), (&STANDARD_NO_PAD, false)] {
            let blob = engine.encode(REAL).into_bytes();
            let scrubbed = scrub(&blob, &pairs);
            assert_eq!(scrubbed, engine.encode(STUB).into_bytes(), "padded: {pad}");
        }
        // Ending a blob at offset 1: the tail decodes to the stub's tail.
        let mut plain = b"x".to_vec();
        plain.extend_from_slice(REAL);
        let scrubbed = scrub(STANDARD.encode(&plain).as_bytes(), &pairs);
        let decoded = STANDARD.decode(&scrubbed).unwrap();
        assert!(decoded.ends_with(&STUB[1..]), "{}", String::from_utf8_lossy(&decoded));
    }

    #[test]
    fn stable_middles_hold_only_the_values_own_bits() {
        // A 9-byte value at offset 1: bits 8..80 of the group-aligned buffer, so characters 2..13.
        let value = b"abcdefghi";
        let form = base64_form(value, Alphabet::Standard, 1, End::Middle).unwrap();
        assert_eq!(form.len(), 13 - 2);
        for neighbour in 0..=255u8 {
            let mut plain = vec![neighbour];
            plain.extend_from_slice(value);
            plain.push(neighbour);
            assert!(
                contains(STANDARD.encode(&plain).as_bytes(), &form),
                "neighbour {neighbour}"
            );
        }
    }

    #[test]
    fn hex_in_both_cases() {
        let pairs = pairs(REAL, STUB);
        for case in [Case::Lower, Case::Upper] {
            let text = [b"sha=".to_vec(), hex(REAL, case), b";".to_vec()].concat();
            assert_eq!(
                scrub(&text, &pairs),
                [b"sha=".to_vec(), hex(STUB, case), b";".to_vec()].concat()
            );
        }
        assert_eq!(hex(b"\x0f\xa0", Case::Lower), b"0fa0");
        assert_eq!(hex(b"\x0f\xa0", Case::Upper), b"0FA0");
    }

    #[test]
    fn percent_encoding_every_byte_and_the_minimal_forms() {
        assert_eq!(percent(b"a/b", PercentKeep::Nothing, Case::Upper), b"%61%2F%62");
        assert_eq!(percent(b"a/b", PercentKeep::Nothing, Case::Lower), b"%61%2f%62");
        assert_eq!(percent(b"a/b~c+", PercentKeep::Unreserved, Case::Upper), b"a%2Fb~c%2B");
        assert_eq!(percent(b"a/b~c+", PercentKeep::Path, Case::Upper), b"a/b~c%2B");
        assert_eq!(percent(b"a*b(c)?", PercentKeep::Component, Case::Upper), b"a*b(c)%3F");
        assert_eq!(percent(b"a*b(c)?", PercentKeep::Uri, Case::Upper), b"a*b(c)?");
        assert_eq!(percent(b"a b~", PercentKeep::Form, Case::Upper), b"a+b%7E");
        let pairs = pairs(REAL, STUB);
        for keep in [PercentKeep::Nothing, PercentKeep::Unreserved, PercentKeep::Path] {
            for case in [Case::Upper, Case::Lower] {
                let text = [b"q=".to_vec(), percent(REAL, keep, case), b"&".to_vec()].concat();
                let scrubbed = scrub(&text, &pairs);
                assert_eq!(
                    scrubbed,
                    [b"q=".to_vec(), percent(STUB, keep, case), b"&".to_vec()].concat()
                );
            }
        }
    }

    #[test]
    fn json_escapes_every_character_and_the_minimal_forms() {
        assert_eq!(json(b"a/", JsonEscape::Every(Case::Lower)).unwrap(), b"\\u0061\\u002f");
        assert_eq!(json(b"a/", JsonEscape::Every(Case::Upper)).unwrap(), b"\\u0061\\u002F");
        assert_eq!(
            json("é😀".as_bytes(), JsonEscape::Every(Case::Lower)).unwrap(),
            b"\\u00e9\\ud83d\\ude00"
        );
        let minimal = |slash, html| JsonEscape::Minimal { slash, html };
        assert_eq!(json(b"a/\"<", minimal(false, false)).unwrap(), b"a/\\\"<");
        assert_eq!(json(b"a/\"<", minimal(true, false)).unwrap(), b"a\\/\\\"<");
        assert_eq!(json(b"a/\"<", minimal(false, true)).unwrap(), b"a/\\\"\\u003c");
        assert_eq!(json(b"\x01\n", minimal(false, false)).unwrap(), b"\\u0001\\n");
        assert_eq!(json(b"\xff", minimal(false, false)), None, "not UTF-8");
        let pairs = pairs(REAL, STUB);
        for escape in [
            JsonEscape::Every(Case::Lower),
            JsonEscape::Every(Case::Upper),
            minimal(true, false),
        ] {
            let text = [b"{\"v\":\"".to_vec(), json(REAL, escape).unwrap(), b"\"}".to_vec()].concat();
            let scrubbed = scrub(&text, &pairs);
            assert!(!contains(&scrubbed, &json(REAL, escape).unwrap()), "{escape:?}");
            assert!(contains(&scrubbed, &json(STUB, escape).unwrap()), "{escape:?}");
        }
    }

    #[test]
    fn reversed_by_character() {
        assert_eq!(reversed("abé".as_bytes()), "éba".as_bytes());
        let text = [b"<".to_vec(), reversed(REAL), b">".to_vec()].concat();
        assert_eq!(
            scrub(&text, &pairs(REAL, STUB)),
            [b"<".to_vec(), reversed(STUB), b">".to_vec()].concat()
        );
    }

    #[test]
    fn short_values_get_only_their_literal_form() {
        assert_eq!(pairs(b"abc", b"stub"), vec![(b"abc".to_vec(), b"stub".to_vec())]);
        assert_eq!(forms(b"abcdefg"), vec![b"abcdefg".to_vec()]);
        assert!(forms(b"abcdefgh").len() > 10);
        assert!(pairs(b"", b"x").is_empty());
        assert!(forms(b"").is_empty());
    }

    #[test]
    fn equal_forms_are_one_needle() {
        let forms = forms(b"abcdefgh1234");
        let mut unique = forms.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), forms.len());
        // Letters and digits percent-encode and JSON-escape (minimally) to themselves.
        assert_eq!(forms.iter().filter(|f| f.as_slice() == b"abcdefgh1234").count(), 1);
    }

    #[test]
    fn forms_recognise_a_stub_in_every_encoding() {
        let forms = forms(STUB);
        for encoding in Encoding::all() {
            let Some(encoded) = encoding.encode(STUB) else {
                continue;
            };
            assert!(forms.contains(&encoded), "{encoding:?}");
        }
        for encoded in [
            STANDARD.encode(STUB),
            URL_SAFE_NO_PAD.encode(STUB),
            hex::upper(STUB),
            String::from_utf8(percent(STUB, PercentKeep::Nothing, Case::Lower)).unwrap(),
        ] {
            assert!(forms.iter().any(|f| contains(encoded.as_bytes(), f)), "{encoded}");
        }
    }

    mod hex {
        pub fn upper(value: &[u8]) -> String {
            String::from_utf8(super::hex(value, super::Case::Upper)).unwrap()
        }
    }
}
