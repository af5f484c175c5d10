//! Where a credential may go: the credential data model every peer of the vault shares.
//!
//! One declaration, used by the API, the CLI, the store and the vault (in-process or sidecar):
//! - [`Injection`]: a place in a request where a credential's stub is swapped for its real value,
//!   written `authorization`, `header:NAME`, `query:NAME` or `body`. A stub anywhere else in a
//!   request to a bound host is refused by the vault, never swapped.
//! - [`RequestRule`]: an optional method and path rule, written `GET,POST /repos/acme/**`,
//!   `/repos/**` or `* /x`. A credential with rules is swapped only into requests one of them allows.
//! - The preset tables: the hosts ([`preset_hosts`]) and injection points ([`default_injection`]) a
//!   well-known credential name gets when it is given none.
//! - [`VaultBinding`]/[`BoundCredential`]: what a sandbox's vault is handed. The real value is a
//!   [`Secret`]; this binding is the one type that serialises it (the sidecar reads it from a file
//!   mounted only into its container), and nothing here prints it: `Debug` is written by hand and
//!   leaves the value out.
//!
//! Invariants: every [`Injection`] and [`RequestRule`] that exists was validated by its parser, and
//! its `Display` form parses back to the same value. [`RequestRule::allows`] matches the path a
//! server that normalises paths would see (unreserved percent-escapes decoded, `.`/`..` resolved),
//! and refuses a path it cannot read the same way as every server would (a bad escape, a `..`
//! above the root, a `.`/`..` hidden behind `;` or an encoded slash).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secret::Secret;

/// Longest header or query parameter name of an injection point.
pub const MAX_POINT_NAME_LEN: usize = 128;
/// Most injection points one credential may have.
pub const MAX_INJECTIONS: usize = 16;
/// Longest rule, in its string form.
pub const MAX_RULE_LEN: usize = 1024;
/// Most rules one credential may have.
pub const MAX_RULES: usize = 64;

/// Hosts a well-known credential is bound to when it is given none.
pub const CREDENTIAL_PRESETS: &[(&str, &[&str])] = &[
    (
        "GITHUB_TOKEN",
        &["github.com", "api.github.com", "*.githubusercontent.com"],
    ),
    ("GH_TOKEN", &["github.com", "api.github.com", "*.githubusercontent.com"]),
    ("ANTHROPIC_API_KEY", &["api.anthropic.com"]),
    ("OPENAI_API_KEY", &["api.openai.com"]),
    ("GEMINI_API_KEY", &["generativelanguage.googleapis.com"]),
    ("GOOGLE_API_KEY", &["generativelanguage.googleapis.com"]),
    ("GITLAB_TOKEN", &["gitlab.com"]),
];

/// Injection points a well-known credential gets when it is given none, in their string form.
/// Every other name gets [`FALLBACK_INJECTION`].
pub const INJECTION_PRESETS: &[(&str, &[&str])] = &[
    ("GITHUB_TOKEN", &["authorization"]),
    ("GH_TOKEN", &["authorization"]),
    ("ANTHROPIC_API_KEY", &["authorization", "header:x-api-key"]),
    ("OPENAI_API_KEY", &["authorization"]),
    ("GEMINI_API_KEY", &["header:x-goog-api-key", "authorization"]),
    ("GOOGLE_API_KEY", &["header:x-goog-api-key", "authorization"]),
    ("GITLAB_TOKEN", &["header:private-token", "authorization"]),
];

/// The injection points of a credential name no preset knows.
pub const FALLBACK_INJECTION: &[&str] = &["authorization"];

/// The preset hosts of a well-known credential name.
pub fn preset_hosts(name: &str) -> Option<Vec<String>> {
    CREDENTIAL_PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, hosts)| hosts.iter().map(|h| (*h).to_owned()).collect())
}

/// The injection points a credential named `name` gets when it is given none: its preset's, or
/// `authorization` only.
pub fn default_injection(name: &str) -> Vec<Injection> {
    let points = INJECTION_PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(FALLBACK_INJECTION, |(_, points)| *points);
    // The tables are checked by a unit test; an entry that did not parse would only be left out.
    points.iter().filter_map(|p| p.parse().ok()).collect()
}

/// Headers an injection point may not name: the one that has its own point, and the ones the
/// connection's framing, routing or the proxy itself owns.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

/// A place in a request where a credential's stub is swapped for the real value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Injection {
    /// The `Authorization` header, as exactly `Bearer <stub>`, `token <stub>`,
    /// `Basic base64(user:<stub>)` or `Basic base64(<stub>:anything)`.
    Authorization,
    /// The whole (trimmed) value of this header, or `Bearer <stub>` in it. The name is lower-case.
    Header(String),
    /// The whole value of this query parameter. The name is as written (query names are
    /// case-sensitive).
    Query(String),
    /// Anywhere in the body. An opt-in: a host that stores what it is sent can hand the real value
    /// back in a form the scrubber does not recognise.
    Body,
}

/// Why a string is not an injection point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectionError {
    #[error("unknown injection point `{0}`")]
    Unknown(String),
    #[error("injection point `{0}` names no {1}")]
    Empty(String, &'static str),
    #[error("injection point `{0}` has a name longer than {MAX_POINT_NAME_LEN} characters")]
    TooLong(String),
    #[error("`{0}` is not a header name")]
    BadHeader(String),
    #[error("`{0}` names the `Authorization` header")]
    Authorization(String),
    #[error("header `{0}` cannot carry a credential")]
    Reserved(String),
    #[error("`{0}` is not a query parameter name")]
    BadQuery(String),
}

impl InjectionError {
    /// What to write instead.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Authorization(_) => "say `authorization` (it covers Bearer, token and Basic)",
            Self::Reserved(_) => "the connection's framing and routing headers are the proxy's; name another header",
            Self::BadQuery(_) => "a query parameter name is letters, digits, `-`, `.`, `_` and `~`",
            Self::BadHeader(_) => "a header name is letters, digits and `!#$%&'*+-.^_`|~`",
            _ => "use `authorization`, `header:NAME`, `query:NAME` or `body`",
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// RFC 3986 `unreserved`.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~".contains(c)
}

impl FromStr for Injection {
    type Err = InjectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (kind, name) = match text.split_once(':') {
            Some((kind, name)) => (kind.trim().to_ascii_lowercase(), Some(name.trim())),
            None => (text.to_ascii_lowercase(), None),
        };
        match (kind.as_str(), name) {
            ("authorization", None) => Ok(Self::Authorization),
            ("body", None) => Ok(Self::Body),
            ("header", Some(name)) => {
                check_name(text, name, "header")?;
                if !name.chars().all(is_tchar) {
                    return Err(InjectionError::BadHeader(name.to_owned()));
                }
                let name = name.to_ascii_lowercase();
                if name == "authorization" {
                    return Err(InjectionError::Authorization(text.to_owned()));
                }
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(InjectionError::Reserved(name));
                }
                Ok(Self::Header(name))
            }
            ("query", Some(name)) => {
                check_name(text, name, "query parameter")?;
                if !name.chars().all(is_unreserved) {
                    return Err(InjectionError::BadQuery(name.to_owned()));
                }
                Ok(Self::Query(name.to_owned()))
            }
            _ => Err(InjectionError::Unknown(text.to_owned())),
        }
    }
}

fn check_name(text: &str, name: &str, what: &'static str) -> Result<(), InjectionError> {
    if name.is_empty() {
        return Err(InjectionError::Empty(text.to_owned(), what));
    }
    if name.len() > MAX_POINT_NAME_LEN {
        return Err(InjectionError::TooLong(text.chars().take(40).collect()));
    }
    Ok(())
}

impl fmt::Display for Injection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Authorization => f.write_str("authorization"),
            Self::Header(name) => write!(f, "header:{name}"),
            Self::Query(name) => write!(f, "query:{name}"),
            Self::Body => f.write_str("body"),
        }
    }
}

impl Serialize for Injection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Injection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A method and path rule: a credential with rules is swapped only into requests one of them
/// allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestRule {
    /// Upper-case method names; `None` is any method.
    pub methods: Option<Vec<String>>,
    /// The path glob, starting with `/`: `*` matches within one segment, `**` any number of
    /// segments. Kept normalised (unreserved percent-escapes decoded, other escapes upper-case).
    pub path: String,
}

/// Why a string is not a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the rule is empty")]
    Empty,
    #[error("rule `{0}` is longer than {MAX_RULE_LEN} characters")]
    TooLong(String),
    #[error("rule `{0}` has no path starting with `/`")]
    NoPath(String),
    #[error("rule `{0}` names the method `{1}`, which is not a method name")]
    BadMethod(String, String),
    #[error("rule `{0}` has `{1}` in its path")]
    BadPathChar(String, char),
    #[error("rule `{0}` has a bad percent-escape in its path")]
    BadEscape(String),
    #[error("rule `{0}` has an empty, `.` or `..` segment in its path")]
    BadSegment(String),
    #[error("rule `{0}` has `**` inside a segment")]
    BadDoubleStar(String),
}

impl RuleError {
    /// What to write instead.
    pub fn hint(&self) -> &'static str {
        "write `METHODS /glob`, e.g. `GET,POST /repos/acme/**` or `/repos/**` (any method); `*` matches within one segment, `**` any number of segments"
    }
}

impl FromStr for RequestRule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.is_empty() {
            return Err(RuleError::Empty);
        }
        if text.len() > MAX_RULE_LEN {
            return Err(RuleError::TooLong(text.chars().take(40).collect()));
        }
        let slash = text.find('/').ok_or_else(|| RuleError::NoPath(text.to_owned()))?;
        let (methods, path) = text.split_at(slash);
        let methods = if methods.is_empty() {
            None
        } else if methods.ends_with(char::is_whitespace) {
            parse_methods(text, methods.trim())?
        } else {
            return Err(RuleError::NoPath(text.to_owned()));
        };
        if let Some(bad) = path
            .chars()
            .find(|&c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '\\'))
        {
            return Err(RuleError::BadPathChar(text.to_owned(), bad));
        }
        let mut segments = Vec::new();
        if path != "/" {
            for raw in path[1..].split('/') {
                let segment = normalize_segment(raw).ok_or_else(|| RuleError::BadEscape(text.to_owned()))?;
                if segment.is_empty() || segment == "." || segment == ".." {
                    return Err(RuleError::BadSegment(text.to_owned()));
                }
                if segment.contains("**") && segment != "**" {
                    return Err(RuleError::BadDoubleStar(text.to_owned()));
                }
                segments.push(segment);
            }
        }
        Ok(Self {
            methods,
            path: format!("/{}", segments.join("/")),
        })
    }
}

fn parse_methods(text: &str, methods: &str) -> Result<Option<Vec<String>>, RuleError> {
    if methods == "*" {
        return Ok(None);
    }
    let mut list: Vec<String> = Vec::new();
    for method in methods.split(',') {
        let method = method.trim();
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_') {
            return Err(RuleError::BadMethod(text.to_owned(), method.to_owned()));
        }
        let method = method.to_ascii_uppercase();
        if !list.contains(&method) {
            list.push(method);
        }
    }
    Ok(Some(list))
}

impl fmt::Display for RequestRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.methods {
            Some(methods) => write!(f, "{} {}", methods.join(","), self.path),
            None => f.write_str(&self.path),
        }
    }
}

impl Serialize for RequestRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RequestRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl RequestRule {
    /// Whether a request with this method and path (its request target; a query or fragment is
    /// ignored) is inside the rule. The method is compared exactly (methods are case-sensitive);
    /// a path that does not read the same to every server is never allowed.
    pub fn allows(&self, method: &str, path: &str) -> bool {
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| m == method)
        {
            return false;
        }
        let Some(segments) = normalize_path(path) else {
            return false;
        };
        let pattern: Vec<&str> = if self.path == "/" {
            Vec::new()
        } else {
            self.path[1..].split('/').collect()
        };
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match_segments(&pattern, &segments)
    }
}

/// A request path as a normalising server reads it: the query and fragment cut off, empty segments
/// dropped, unreserved percent-escapes decoded (others upper-cased), `.` and `..` resolved. `None`
/// for a path that cannot be read the same way by every server: not starting with `/`, a bad
/// escape, a control character or backslash, a `..` above the root, or a `.`/`..` hidden behind
/// `;` or an encoded slash.
fn normalize_path(target: &str) -> Option<Vec<String>> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let rest = path.strip_prefix('/')?;
    if path.chars().any(|c| c.is_control() || c == '\\' || c == ' ') {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for raw in rest.split('/') {
        let segment = normalize_segment(raw)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            _ => {
                if hides_dot_segment(&segment) {
                    return None;
                }
                out.push(segment);
            }
        }
    }
    Some(out)
}

/// Whether a segment holds a `.` or `..` that some server would resolve: before a `;` (path
/// parameters) or between encoded slashes or backslashes.
fn hides_dot_segment(segment: &str) -> bool {
    let upper = segment.to_ascii_uppercase();
    upper
        .split("%2F")
        .flat_map(|p| p.split("%5C"))
        .map(|p| p.split(';').next().unwrap_or_default())
        .any(|p| p == "." || p == "..")
}

/// One segment with its unreserved percent-escapes decoded and the others' hex upper-cased;
/// `None` for a `%` not followed by two hex digits.
fn normalize_segment(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let hi = chars.next()?.to_digit(16)?;
        let lo = chars.next()?.to_digit(16)?;
        let byte = u8::try_from(hi * 16 + lo).ok()?;
        let decoded = char::from(byte);
        if byte.is_ascii() && is_unreserved(decoded) {
            out.push(decoded);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    Some(out)
}

/// Glob over segments: `**` matches any number of segments (zero included), any other pattern
/// segment one segment.
fn match_segments(pattern: &[&str], segments: &[&str]) -> bool {
    // Classic wildcard matching with one backtrack point per `**`: O(pattern × segments).
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < segments.len() {
        if p < pattern.len() && pattern[p] == "**" {
            star = Some((p, s));
            p += 1;
        } else if p < pattern.len() && match_segment(pattern[p], segments[s]) {
            p += 1;
            s += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|seg| *seg == "**")
}

/// Glob within one segment: `*` matches any run of characters.
fn match_segment(pattern: &str, segment: &str) -> bool {
    let (pattern, segment) = (pattern.as_bytes(), segment.as_bytes());
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < segment.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, s));
            p += 1;
        } else if p < pattern.len() && pattern[p] == segment[s] {
            p += 1;
            s += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// What a sandbox's vault is handed: the credentials it may swap and the egress policy. The sidecar
/// reads it as JSON (its `--binding` file and `PUT /binding`); the in-process vault gets it from
/// the control plane directly.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultBinding {
    #[serde(default)]
    pub credentials: Vec<BoundCredential>,
    #[serde(default)]
    pub allow_out: Vec<String>,
    #[serde(default)]
    pub deny_out: Vec<String>,
    #[serde(default)]
    pub egress_default_deny: bool,
}

impl fmt::Debug for VaultBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultBinding")
            .field("credentials", &self.credentials)
            .field("allow_out", &self.allow_out)
            .field("deny_out", &self.deny_out)
            .field("egress_default_deny", &self.egress_default_deny)
            .finish()
    }
}

/// One credential as a vault holds it. Deserialising one without `inject` gives it
/// [`default_injection`] of its name; without `rules`, none (any request).
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "BoundCredentialFile")]
pub struct BoundCredential {
    pub name: String,
    /// What the agent holds instead of the value.
    pub stub: String,
    /// The real value: serialised only into this binding, never printed.
    #[serde(serialize_with = "expose_secret")]
    pub value: Secret,
    /// Host patterns: `host`, `*.suffix`, optionally `:port`.
    pub hosts: Vec<String>,
    pub inject: Vec<Injection>,
    pub rules: Vec<RequestRule>,
}

impl BoundCredential {
    /// Whether the credential's rules allow a request (no rules: every request).
    pub fn allows_request(&self, method: &str, path: &str) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r.allows(method, path))
    }
}

impl fmt::Debug for BoundCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundCredential")
            .field("name", &self.name)
            .field("stub", &self.stub)
            .field("hosts", &self.hosts)
            .field("inject", &self.inject)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

fn expose_secret<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

/// The JSON shape of a [`BoundCredential`], before defaults are filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundCredentialFile {
    name: String,
    stub: String,
    value: String,
    hosts: Vec<String>,
    #[serde(default)]
    inject: Option<Vec<Injection>>,
    #[serde(default)]
    rules: Vec<RequestRule>,
}

impl From<BoundCredentialFile> for BoundCredential {
    fn from(file: BoundCredentialFile) -> Self {
        let inject = file.inject.unwrap_or_else(|| default_injection(&file.name));
        Self {
            name: file.name,
            stub: file.stub,
            value: Secret::new(file.value),
            hosts: file.hosts,
            inject,
            rules: file.rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inject(s: &str) -> Result<Injection, InjectionError> {
        s.parse()
    }

    fn rule(s: &str) -> RequestRule {
        s.parse().unwrap_or_else(|e| panic!("`{s}`: {e}"))
    }

    #[test]
    fn injection_points_parse_and_print_in_one_form() {
        for (text, want) in [
            ("authorization", Injection::Authorization),
            ("Authorization", Injection::Authorization),
            ("body", Injection::Body),
            ("header:X-Api-Key", Injection::Header("x-api-key".into())),
            (" header: private-token ", Injection::Header("private-token".into())),
            ("query:api_key", Injection::Query("api_key".into())),
            ("query:Key", Injection::Query("Key".into())),
        ] {
            let got = inject(text).unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(inject(&got.to_string()).unwrap(), got, "round trip of {text}");
        }
        assert_eq!(
            inject("HEADER:X-Goog-Api-Key").unwrap().to_string(),
            "header:x-goog-api-key"
        );
    }

    #[test]
    fn injection_points_refuse_what_is_not_one() {
        assert_eq!(
            inject("header:authorization"),
            Err(InjectionError::Authorization("header:authorization".into()))
        );
        assert!(
            inject("header:Authorization")
                .unwrap_err()
                .hint()
                .contains("`authorization`")
        );
        assert!(matches!(inject("header:host"), Err(InjectionError::Reserved(_))));
        assert!(matches!(
            inject("header:Content-Length"),
            Err(InjectionError::Reserved(_))
        ));
        assert!(matches!(inject("header:x api"), Err(InjectionError::BadHeader(_))));
        assert!(matches!(inject("header:x:y"), Err(InjectionError::BadHeader(_))));
        assert!(matches!(inject("header:"), Err(InjectionError::Empty(..))));
        assert!(matches!(inject("query:"), Err(InjectionError::Empty(..))));
        assert!(matches!(inject("query:a&b"), Err(InjectionError::BadQuery(_))));
        assert!(matches!(inject("query:a=b"), Err(InjectionError::BadQuery(_))));
        assert!(matches!(inject("query:%61"), Err(InjectionError::BadQuery(_))));
        assert!(matches!(inject("cookie"), Err(InjectionError::Unknown(_))));
        assert!(matches!(inject("body:x"), Err(InjectionError::Unknown(_))));
        assert!(matches!(inject("authorization:x"), Err(InjectionError::Unknown(_))));
        assert!(matches!(inject(""), Err(InjectionError::Unknown(_))));
        let long = format!("header:{}", "a".repeat(MAX_POINT_NAME_LEN + 1));
        assert!(matches!(inject(&long), Err(InjectionError::TooLong(_))));
    }

    #[test]
    fn injection_points_serialise_as_their_string_form() {
        let points = vec![Injection::Authorization, Injection::Header("x-api-key".into())];
        let json = serde_json::to_string(&points).unwrap();
        assert_eq!(json, r#"["authorization","header:x-api-key"]"#);
        assert_eq!(serde_json::from_str::<Vec<Injection>>(&json).unwrap(), points);
        assert!(serde_json::from_str::<Injection>(r#""header:authorization""#).is_err());
    }

    #[test]
    fn presets_name_the_vendor_header_beside_authorization() {
        let names = |name: &str| {
            default_injection(name)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("GITHUB_TOKEN"), ["authorization"]);
        assert_eq!(names("GH_TOKEN"), ["authorization"]);
        assert_eq!(names("ANTHROPIC_API_KEY"), ["authorization", "header:x-api-key"]);
        assert_eq!(names("OPENAI_API_KEY"), ["authorization"]);
        assert_eq!(names("GEMINI_API_KEY"), ["header:x-goog-api-key", "authorization"]);
        assert_eq!(names("GOOGLE_API_KEY"), ["header:x-goog-api-key", "authorization"]);
        assert_eq!(names("GITLAB_TOKEN"), ["header:private-token", "authorization"]);
        assert_eq!(names("SOME_OTHER_KEY"), ["authorization"]);
    }

    #[test]
    fn every_preset_entry_parses_and_has_hosts() {
        for (name, points) in INJECTION_PRESETS {
            for point in *points {
                assert!(point.parse::<Injection>().is_ok(), "{name}: {point}");
            }
            assert_eq!(default_injection(name).len(), points.len(), "{name}");
            assert!(
                preset_hosts(name).is_some(),
                "{name} has injection presets but no hosts"
            );
        }
        for point in FALLBACK_INJECTION {
            assert!(point.parse::<Injection>().is_ok());
        }
    }

    #[test]
    fn rules_parse_and_print_in_one_form() {
        let r = rule("GET,post /repos/acme/**");
        assert_eq!(r.methods, Some(vec!["GET".to_owned(), "POST".to_owned()]));
        assert_eq!(r.path, "/repos/acme/**");
        assert_eq!(r.to_string(), "GET,POST /repos/acme/**");
        assert_eq!(rule("/repos/**").methods, None);
        assert_eq!(rule("* /x").to_string(), "/x");
        assert_eq!(rule("GET  /").to_string(), "GET /");
        assert_eq!(rule("GET, GET /a").to_string(), "GET /a");
        // Unreserved escapes are decoded, others kept upper-case.
        assert_eq!(rule("/%72epos/acme%2fwidgets").path, "/repos/acme%2Fwidgets");
        for text in ["GET,POST /repos/acme/**", "/a/*/b", "DELETE /x/v1*.json", "/"] {
            let r = rule(text);
            assert_eq!(rule(&r.to_string()), r, "round trip of {text}");
        }
    }

    #[test]
    fn rules_refuse_what_is_not_one() {
        let err = |s: &str| s.parse::<RequestRule>().unwrap_err();
        assert_eq!(err(""), RuleError::Empty);
        assert!(matches!(err("GET"), RuleError::NoPath(_)));
        assert!(matches!(err("GET repos"), RuleError::NoPath(_)));
        assert!(matches!(err("G?T /x"), RuleError::BadMethod(..)));
        assert!(matches!(err("GET/x"), RuleError::NoPath(_)));
        assert!(matches!(err("GET,,POST /x"), RuleError::BadMethod(..)));
        assert!(matches!(err("/a/../b"), RuleError::BadSegment(_)));
        assert!(matches!(err("/a/%2e%2E/b"), RuleError::BadSegment(_)));
        assert!(matches!(err("/a/./b"), RuleError::BadSegment(_)));
        assert!(matches!(err("/a//b"), RuleError::BadSegment(_)));
        assert!(matches!(err("/a/"), RuleError::BadSegment(_)));
        assert!(matches!(err("/a/b**"), RuleError::BadDoubleStar(_)));
        assert!(matches!(err("/a?x=1"), RuleError::BadPathChar(_, '?')));
        assert!(matches!(err("/a\\b"), RuleError::BadPathChar(_, '\\')));
        assert!(matches!(err("/a%zz"), RuleError::BadEscape(_)));
        assert!(matches!(err("/a%4"), RuleError::BadEscape(_)));
        assert!(matches!(
            err(&format!("/{}", "a".repeat(MAX_RULE_LEN))),
            RuleError::TooLong(_)
        ));
        assert!(serde_json::from_str::<RequestRule>(r#""/a/../b""#).is_err());
    }

    #[test]
    fn a_rule_allows_its_methods_and_paths_only() {
        let r = rule("GET,POST /repos/acme/**");
        assert!(r.allows("GET", "/repos/acme"));
        assert!(r.allows("GET", "/repos/acme/widgets/issues?state=open"));
        assert!(r.allows("POST", "/repos/acme/widgets/issues"));
        assert!(!r.allows("DELETE", "/repos/acme/widgets"));
        assert!(!r.allows("get", "/repos/acme/widgets"), "methods are case-sensitive");
        assert!(!r.allows("GET", "/repos/acme2/widgets"));
        assert!(!r.allows("GET", "/repos"));
        assert!(!r.allows("GET", "/user"));

        let one = rule("/repos/*/issues");
        assert!(one.allows("PATCH", "/repos/acme/issues"));
        assert!(!one.allows("GET", "/repos/acme/widgets/issues"), "`*` is one segment");
        assert!(!one.allows("GET", "/repos/issues"));

        let within = rule("GET /files/v1*.json");
        assert!(within.allows("GET", "/files/v1.json"));
        assert!(within.allows("GET", "/files/v1-beta.json"));
        assert!(!within.allows("GET", "/files/v2.json"));
        assert!(!within.allows("GET", "/files/v1/x.json"));

        let middle = rule("/a/**/z");
        assert!(middle.allows("GET", "/a/z"));
        assert!(middle.allows("GET", "/a/b/c/z"));
        assert!(!middle.allows("GET", "/a/b/c/y"));

        let root = rule("GET /");
        assert!(root.allows("GET", "/"));
        assert!(!root.allows("GET", "/x"));
    }

    #[test]
    fn dot_segments_are_resolved_before_matching_and_cannot_escape() {
        let r = rule("/repos/acme/**");
        assert!(r.allows("GET", "/repos/acme/./widgets"));
        assert!(r.allows("GET", "/repos/acme/x/../widgets"));
        assert!(!r.allows("GET", "/repos/acme/../other/widgets"));
        assert!(!r.allows("GET", "/repos/acme/../../admin"));
        assert!(!r.allows("GET", "/../repos/acme/x"), "above the root");
        assert!(
            !r.allows("GET", "/repos/acme/x/../../../../repos/acme"),
            "above the root"
        );
        // Percent-encoded dots are dots.
        assert!(!r.allows("GET", "/repos/acme/%2e%2e/other"));
        assert!(!r.allows("GET", "/repos/acme/%2E%2E/other"));
        assert!(!r.allows("GET", "/repos/acme/.%2e/other"));
        assert!(r.allows("GET", "/repos/acme/x/%2e%2e/widgets"));
    }

    #[test]
    fn percent_tricks_match_what_the_server_reads_or_are_refused() {
        let r = rule("GET /repos/acme/**");
        // An encoded unreserved character is that character.
        assert!(r.allows("GET", "/%72epos/%61cme/widgets"));
        assert!(!r.allows("GET", "/repos/%61cme2/widgets"));
        // An encoded slash is not a separator here, so it does not match a literal segment...
        assert!(!r.allows("GET", "/repos%2Facme/widgets"));
        // ...and a dot segment hidden behind one, a backslash or `;` is refused outright.
        let any = rule("/repos/*/issues");
        assert!(any.allows("GET", "/repos/acme%2Fwidgets/issues"));
        assert!(!any.allows("GET", "/repos/a%2F..%2F..%2Fadmin/issues"));
        assert!(!any.allows("GET", "/repos/a%2f..%2f..%2fadmin/issues"));
        assert!(!any.allows("GET", "/repos/..%5Cadmin/issues"));
        assert!(!any.allows("GET", "/repos/..;/issues"));
        assert!(!r.allows("GET", "/repos/acme/..;/..;/admin"));
        assert!(!r.allows("GET", "/repos\\acme/x"));
        // Bad escapes, control characters and non-origin targets are refused.
        assert!(!r.allows("GET", "/repos/acme/%zz"));
        assert!(!r.allows("GET", "/repos/acme/%4"));
        assert!(!r.allows("GET", "/repos/acme/a%"));
        assert!(!r.allows("GET", "/repos/acme/\u{0}x"));
        assert!(!r.allows("GET", "repos/acme/x"));
        assert!(!r.allows("GET", "*"));
        assert!(!r.allows("GET", "https://api.github.com/repos/acme/x"));
        // An encoded `?` is part of the path, not a query.
        assert!(!rule("/a").allows("GET", "/a%3Fb"));
        assert!(rule("/a").allows("GET", "/a?b=%2e%2e"));
        // Empty segments collapse.
        assert!(r.allows("GET", "/repos//acme/x"));
        assert!(!rule("/a/*/b").allows("GET", "/a//b"));
    }

    #[test]
    fn a_credential_without_rules_allows_every_request() {
        let mut credential = bound("GITHUB_TOKEN");
        assert!(credential.allows_request("DELETE", "/anything"));
        credential.rules = vec![rule("GET /a/**"), rule("POST /b")];
        assert!(credential.allows_request("GET", "/a/x"));
        assert!(credential.allows_request("POST", "/b"));
        assert!(!credential.allows_request("POST", "/a/x"));
    }

    fn bound(name: &str) -> BoundCredential {
        BoundCredential {
            name: name.into(),
            stub: "lap_stub_0123".into(),
            value: Secret::new("ghp_realvalue"),
            hosts: vec!["api.github.com".into()],
            inject: default_injection(name),
            rules: Vec::new(),
        }
    }

    #[test]
    fn the_binding_round_trips_with_the_value_and_debug_never_shows_it() {
        let mut credential = bound("ANTHROPIC_API_KEY");
        credential.rules = vec![rule("POST /v1/messages")];
        let binding = VaultBinding {
            credentials: vec![credential],
            allow_out: vec!["pypi.org".into()],
            deny_out: Vec::new(),
            egress_default_deny: true,
        };
        let json = serde_json::to_string(&binding).unwrap();
        assert!(json.contains(r#""value":"ghp_realvalue""#), "{json}");
        assert!(
            json.contains(r#""inject":["authorization","header:x-api-key"]"#),
            "{json}"
        );
        assert!(json.contains(r#""rules":["POST /v1/messages"]"#), "{json}");
        let back: VaultBinding = serde_json::from_str(&json).unwrap();
        let c = &back.credentials[0];
        assert_eq!(c.value.expose(), "ghp_realvalue");
        assert_eq!(c.inject, default_injection("ANTHROPIC_API_KEY"));
        assert_eq!(c.rules, vec![rule("POST /v1/messages")]);
        assert!(back.egress_default_deny);

        let debug = format!("{back:?}");
        assert!(!debug.contains("ghp_realvalue"), "{debug}");
        assert!(debug.contains("lap_stub_0123"), "{debug}");
    }

    #[test]
    fn a_bound_credential_without_inject_gets_its_preset_and_unknown_fields_are_refused() {
        let json = r#"{"credentials":[{"name":"GITLAB_TOKEN","stub":"s","value":"v","hosts":["gitlab.com"]}]}"#;
        let binding: VaultBinding = serde_json::from_str(json).unwrap();
        assert_eq!(binding.credentials[0].inject, default_injection("GITLAB_TOKEN"));
        assert!(binding.credentials[0].rules.is_empty());

        let extra = r#"{"credentials":[{"name":"A","stub":"s","value":"v","hosts":[],"inject":[],"where":1}]}"#;
        assert!(serde_json::from_str::<VaultBinding>(extra).is_err());
        assert!(serde_json::from_str::<VaultBinding>(r#"{"credentials":[],"policy":1}"#).is_err());
        let bad_point = r#"{"credentials":[{"name":"A","stub":"s","value":"v","hosts":[],"inject":["header:host"]}]}"#;
        assert!(serde_json::from_str::<VaultBinding>(bad_point).is_err());
        // An explicit empty list stays empty: the credential may go nowhere.
        let none = r#"{"credentials":[{"name":"A","stub":"s","value":"v","hosts":[],"inject":[]}]}"#;
        assert!(
            serde_json::from_str::<VaultBinding>(none).unwrap().credentials[0]
                .inject
                .is_empty()
        );
    }
}
