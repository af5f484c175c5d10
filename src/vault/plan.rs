//! The vault's decision step: what one request may do, decided from its head alone.
//!
//! [`decide`] takes a request head on an intercepted connection (method, authority, path, headers),
//! the sandbox's [`Binding`] and the CONNECT target, and returns either a [`Plan`] — the head as it
//! goes upstream (stubs swapped, hop-by-hop headers gone), and what the body, frames and response are
//! rewritten with — or a [`Refusal`]: a [`Why`] and a reason for the sandbox and the record.
//! [`decide_plain`] does the same for absolute-form `http://` requests, where nothing is ever
//! swapped. Nothing here touches a socket, reads a body or writes a record; the I/O step
//! ([`super::intercept`]) does, after the decision.
//!
//! Invariant: a stub is swapped only for a credential bound to the CONNECT target, on a request
//! whose `Host`/`:authority` names that target; any other credential's stub in the head refuses the
//! request before anything goes upstream.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use aho_corasick::AhoCorasick;

use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;

use super::audit::AuditLog;
use super::body::{Guard, GuardCache, Trip};
use super::limits::Tunnels;
use super::policy::Policy;
use super::rewrite::{NeedleSet, Substitutions, host_matches};
use crate::wire::vault::Injection;

/// One credential as a sandbox's vault holds it: the one binding type of [`crate::wire::vault`]
/// (its real value a [`crate::secret::Secret`], its injection points and rules).
pub type Credential = crate::wire::vault::BoundCredential;

/// What one sandbox's listener enforces, and the record of what passed it.
pub struct Binding {
    pub credentials: Vec<Credential>,
    pub policy: Policy,
    pub audit: AuditLog,
    /// The sandbox's places for connections through the vault ([`super::limits`]).
    pub tunnels: Tunnels,
    /// Per credential, a matcher of its stub's encoded forms ([`super::encodings::forms`]), made
    /// on first use: what recognises a disguised stub in a request head.
    disguises: OnceLock<Vec<Option<AhoCorasick>>>,
    /// The guards' needles, built once per set of stubs.
    guards: GuardCache,
    /// The body swaps (stub → real value) of each set of credentials that may go in a body, built
    /// once per set, like the guards.
    swaps: Mutex<HashMap<Vec<usize>, Arc<NeedleSet>>>,
    /// The scrub set of every credential, looked up on first use.
    scrub: OnceLock<Arc<NeedleSet>>,
}

impl Binding {
    pub fn new(credentials: Vec<Credential>, policy: Policy) -> Self {
        Self::with_audit(credentials, policy, AuditLog::default())
    }

    pub fn with_audit(credentials: Vec<Credential>, policy: Policy, audit: AuditLog) -> Self {
        Self {
            credentials,
            policy,
            audit,
            tunnels: Tunnels::new(),
            disguises: OnceLock::new(),
            guards: GuardCache::default(),
            swaps: Mutex::default(),
            scrub: OnceLock::new(),
        }
    }

    /// Whether credential `i`'s stub is in `head` in an encoded form (percent, JSON escapes,
    /// base64 at any alignment, hex, reversed): in the path or a header's value.
    fn disguised_in(&self, i: usize, head: &Head<'_>) -> bool {
        let matchers = self.disguises.get_or_init(|| {
            self.credentials
                .iter()
                .map(|c| {
                    let forms: Vec<Vec<u8>> = super::encodings::forms(c.stub.as_bytes()).into_iter().skip(1).collect();
                    AhoCorasick::builder()
                        .ascii_case_insensitive(true)
                        .build(&forms)
                        .ok()
                        .filter(|_| !forms.is_empty())
                })
                .collect()
        });
        let Some(Some(matcher)) = matchers.get(i) else {
            return false;
        };
        matcher.is_match(head.path.as_bytes()) || head.headers.values().any(|v| matcher.is_match(v.as_bytes()))
    }

    /// The stub → real value set of credentials `indices` (hits are positions in `indices`).
    fn body_swap(&self, indices: &[usize]) -> Arc<NeedleSet> {
        let mut swaps = self.swaps.lock().unwrap_or_else(|p| p.into_inner());
        swaps
            .entry(indices.to_vec())
            .or_insert_with(|| {
                Arc::new(NeedleSet::literal(indices.iter().map(|&i| {
                    let c = &self.credentials[i];
                    (c.stub.as_bytes(), c.value.expose().as_bytes())
                })))
            })
            .clone()
    }

    /// Indices of the credentials bound to `host:port`, and of the others.
    fn bound_to(&self, host: &str, port: u16) -> (Vec<usize>, Vec<usize>) {
        (0..self.credentials.len())
            .partition(|&i| self.credentials[i].hosts.iter().any(|p| host_matches(p, host, port)))
    }

    /// Real value → stub, for every credential: what responses are scrubbed with.
    pub fn scrubber(&self) -> Substitutions {
        self.scrubber_with(Vec::new())
    }

    /// [`Self::scrubber`] plus `extra` pairs, which come after the credentials' own.
    pub fn scrubber_with(&self, extra: Vec<(Vec<u8>, Vec<u8>)>) -> Substitutions {
        // Every routine encoding of each real value, and its masked echoes ([`Substitutions::scrubbing`]):
        // hits are credential indices, the extras' following.
        let values = self
            .credentials
            .iter()
            .map(|c| (c.value.expose().as_bytes(), c.stub.as_bytes()));
        if extra.is_empty() {
            return Substitutions::from_set(self.scrub.get_or_init(|| NeedleSet::scrubbing_cached(values)).clone());
        }
        Substitutions::scrubbing(values, extra)
    }

    /// Every real value in lower case: what no response header's name may hold (names are lower
    /// case on the wire to the sandbox).
    pub fn real_names(&self) -> Vec<Vec<u8>> {
        self.credentials
            .iter()
            .map(|c| c.value.expose().to_ascii_lowercase().into_bytes())
            .collect()
    }

    /// Names of `credentials[indices[i]]` for each hit `i` (hits index `indices`).
    pub fn names_of(&self, indices: &[usize], hits: &[usize]) -> Vec<String> {
        self.pick(indices, hits).map(|c| c.name.clone()).collect()
    }

    /// Stubs of the same.
    pub fn stubs_of(&self, indices: &[usize], hits: &[usize]) -> Vec<String> {
        self.pick(indices, hits).map(|c| c.stub.clone()).collect()
    }

    /// Names of `credentials[i]` for each `i` of `hits` (hits of [`Self::scrubber`]).
    pub fn names(&self, hits: &[usize]) -> Vec<String> {
        hits.iter()
            .filter_map(|&i| self.credentials.get(i))
            .map(|c| c.name.clone())
            .collect()
    }

    fn pick<'a>(&'a self, indices: &'a [usize], hits: &'a [usize]) -> impl Iterator<Item = &'a Credential> {
        hits.iter()
            .filter_map(|&h| indices.get(h))
            .filter_map(|&i| self.credentials.get(i))
    }
}

/// Why the vault answered a request itself. Blocks carry `X-Lap-Vault-Blocked: <kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A stub headed somewhere it is not bound to: an alert.
    NotBound,
    /// A bound stub somewhere its credential may not be swapped: an alert.
    NotInjectable,
    /// A bound stub in a request its credential's method/path rules do not allow: an alert.
    Rule,
    /// The sandbox has as many connections open through its vault as it may.
    TunnelLimit,
    /// The destination fails the agent's egress policy.
    Egress,
    /// `Host`/`:authority` names another host than the CONNECT target (no stub aboard).
    HostMismatch,
    /// The TLS ClientHello named another host than the CONNECT target.
    SniMismatch,
    /// A compressed body toward a host with bound credentials.
    Compressed,
    /// A compressed response from an intercepted upstream (it could hide a real value).
    CompressedResponse,
    BadRequest,
    Upstream,
}

impl Why {
    pub fn status(self) -> StatusCode {
        match self {
            Self::NotBound | Self::NotInjectable | Self::Rule | Self::Egress | Self::SniMismatch => {
                StatusCode::FORBIDDEN
            }
            Self::TunnelLimit => StatusCode::TOO_MANY_REQUESTS,
            Self::HostMismatch => StatusCode::MISDIRECTED_REQUEST,
            Self::Compressed => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::CompressedResponse => StatusCode::BAD_GATEWAY,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `X-Lap-Vault-Blocked` value, for refusals that are policy (not errors).
    pub fn kind(self) -> Option<&'static str> {
        match self {
            Self::NotBound => Some("credential-not-bound"),
            Self::NotInjectable => Some("credential-not-injectable"),
            Self::Rule => Some("credential-rule"),
            Self::TunnelLimit => Some("tunnel-limit"),
            Self::Egress => Some("egress-policy"),
            Self::HostMismatch => Some("host-mismatch"),
            Self::SniMismatch => Some("sni-mismatch"),
            Self::Compressed => Some("compressed-body"),
            Self::CompressedResponse => Some("compressed-response"),
            Self::BadRequest | Self::Upstream => None,
        }
    }

    /// The troubleshooting row of this kind of refusal, where it has one (the refusal's body ends
    /// with it).
    pub fn troubleshooting(self) -> Option<&'static str> {
        match self {
            Self::NotBound => Some("docs/troubleshooting.md#credential-not-bound"),
            Self::NotInjectable => Some("docs/troubleshooting.md#credential-not-injectable"),
            Self::Rule => Some("docs/troubleshooting.md#credential-rule"),
            Self::TunnelLimit => Some("docs/troubleshooting.md#tunnel-limit"),
            Self::Egress => Some("docs/troubleshooting.md#egress-policy"),
            _ => None,
        }
    }

    /// Whether a refusal of this kind is an alert (a credential was being moved).
    pub fn is_alert(self) -> bool {
        matches!(self, Self::NotBound | Self::NotInjectable | Self::Rule)
    }
}

/// A request the vault answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub why: Why,
    pub reason: String,
}

impl Refusal {
    fn new(why: Why, reason: impl Into<String>) -> Self {
        Self {
            why,
            reason: reason.into(),
        }
    }
}

/// Where in a request a stub was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Method,
    HeaderName,
    /// A header's value (its name, lower-case).
    Header(String),
    Path,
    /// A query parameter's name or value (the parameter's name).
    Query(String),
    Body,
    /// A request trailer (its name).
    Trailer(String),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Method => f.write_str("the request method"),
            Self::HeaderName => f.write_str("a header name"),
            Self::Header(name) if name == "authorization" => {
                f.write_str("the Authorization header, other than as `Bearer`, `token` or `Basic` credentials")
            }
            Self::Header(name) => write!(f, "the `{name}` header"),
            Self::Path => f.write_str("the request path"),
            Self::Query(name) => write!(f, "the query parameter `{name}`"),
            Self::Body => f.write_str("the request body"),
            Self::Trailer(name) => write!(f, "the request trailer `{name}`"),
        }
    }
}

/// The refusal of `credential`'s stub found at `place`, which is not one of its injection points.
pub fn not_injectable(credential: &Credential, place: &Place) -> Refusal {
    let points: Vec<String> = credential.inject.iter().map(ToString::to_string).collect();
    let points = if points.is_empty() {
        "nowhere".to_owned()
    } else {
        points.join(", ")
    };
    Refusal::new(
        Why::NotInjectable,
        format!(
            "the stub of {} is in {place}; it may only be sent in: {points}",
            credential.name
        ),
    )
}

/// The refusal of `credential`'s stub in a request its rules do not allow.
pub fn outside_rules(credential: &Credential, method: &str, path: &str) -> Refusal {
    let rules: Vec<String> = credential.rules.iter().map(ToString::to_string).collect();
    Refusal::new(
        Why::Rule,
        format!(
            "{} may not be sent with `{method} {path}`; its rules allow only: {}",
            credential.name,
            rules.join("; ")
        ),
    )
}

/// A request head, as the sandbox sent it.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a str,
    /// `:authority`, or else the `Host` header.
    pub authority: Option<&'a str>,
    /// Path and query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// What an allowed request does.
pub struct Plan {
    /// Indices in [`Binding::credentials`] of the credentials bound to the target.
    pub bound: Vec<usize>,
    /// The path and query as they go upstream.
    pub path: PathAndQuery,
    /// The headers as they go upstream. For a WebSocket upgrade only the stubs are swapped (the
    /// upgrade keeps its hop-by-hop headers); otherwise hop-by-hop headers are gone and
    /// `Accept-Encoding` is `identity`, so the response can be scrubbed.
    pub headers: HeaderMap,
    /// Stubs → real values for the body or the frames, pairs in [`Tally::body_swap`]'s order.
    pub swap: Arc<Substitutions>,
    /// What the request swapped: its head's, and the body's as it streams.
    pub tally: Tally,
    /// The stubs the body or frames may not carry, by credential index, and why.
    pub guard_body: Vec<(usize, Why)>,
    /// Encoded real values the head carries (Basic credentials) → their encoded stubs: a response
    /// reflecting them is scrubbed of these too.
    pub reflected: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether the request is a WebSocket upgrade.
    pub websocket: bool,
    method: String,
    path_only: String,
    host: String,
}

/// Which credentials one request swapped.
#[derive(Clone)]
pub struct Tally {
    /// Credentials swapped in the head.
    pub head: Vec<usize>,
    /// Credentials [`Plan::swap`] swaps in the body, in its order.
    pub body_swap: Vec<usize>,
    swap: Arc<Substitutions>,
}

impl Tally {
    /// The names and stubs of the credentials swapped so far (head, then body or frames as far as
    /// they went).
    pub fn swapped(&self, binding: &Binding) -> (Vec<String>, Vec<String>) {
        let mut all: BTreeSet<usize> = self.head.iter().copied().collect();
        all.extend(self.swap.hits().iter().filter_map(|&h| self.body_swap.get(h)));
        all.iter()
            .filter_map(|&i| binding.credentials.get(i))
            .map(|c| (c.name.clone(), c.stub.clone()))
            .unzip()
    }
}

impl Plan {
    /// What the request body may not carry: the stubs of [`Plan::guard_body`] in the body, any
    /// credential's stub in a trailer (trailers are never an injection point).
    pub fn guard(&self, binding: &Binding) -> Guard {
        let stub = |i: usize| binding.credentials[i].stub.as_bytes().to_vec();
        binding.guards.guard(
            self.guard_body.iter().map(|&(i, _)| stub(i)).collect(),
            (0..binding.credentials.len()).map(stub).collect(),
        )
    }

    /// The stubs the frames of a WebSocket may not carry (needle → itself).
    pub fn frame_guard(&self, binding: &Binding) -> Substitutions {
        Substitutions::new(self.guard_body.iter().map(|&(i, _)| {
            let stub = binding.credentials[i].stub.as_bytes();
            (stub, stub)
        }))
    }

    /// The refusal for what tripped [`Plan::guard`].
    pub fn refusal(&self, binding: &Binding, trip: &Trip) -> Refusal {
        let (i, why, place) = match trip {
            Trip::Body(n) => match self.guard_body.get(*n) {
                Some(&(i, why)) => (i, why, Place::Body),
                None => (usize::MAX, Why::NotBound, Place::Body),
            },
            Trip::Trailer(name, i) => {
                let why = if self.bound.contains(i) {
                    Why::NotInjectable
                } else {
                    Why::NotBound
                };
                (*i, why, Place::Trailer(name.clone()))
            }
        };
        let Some(c) = binding.credentials.get(i) else {
            return Refusal::new(Why::NotBound, format!("a stub was sent to `{}`", self.host));
        };
        match why {
            Why::NotInjectable => not_injectable(c, &place),
            Why::Rule => outside_rules(c, &self.method, &self.path_only),
            _ => Refusal::new(Why::NotBound, stray_reason(&[c.name.as_str()], &self.host)),
        }
    }

    /// The record of a WebSocket's frames carrying a stub they may not (which one is not known).
    pub fn frame_refusal(&self, binding: &Binding) -> Refusal {
        let names: Vec<&str> = self
            .guard_body
            .iter()
            .filter_map(|&(i, _)| binding.credentials.get(i))
            .map(|c| c.name.as_str())
            .collect();
        let why = if self.guard_body.iter().all(|&(_, why)| why == Why::NotBound) {
            Why::NotBound
        } else {
            Why::NotInjectable
        };
        Refusal::new(
            why,
            format!(
                "a WebSocket frame to `{}` carried a stub of one of {} (never sent in frames to it)",
                self.host,
                names.join(", ")
            ),
        )
    }
}

/// Decides a request on a connection intercepted for `host:port` (already canonical).
pub fn decide(binding: &Binding, host: &str, port: u16, head: &Head<'_>) -> Result<Plan, Refusal> {
    let creds = &binding.credentials;
    if !head.authority.is_some_and(|a| authority_is(a, host, port)) {
        let asked = head.authority.unwrap_or("(none)");
        // With a stub aboard, this is an attempt to move a credential elsewhere: an alert.
        let why = if creds.iter().any(|c| in_head(head, &c.stub)) {
            Why::NotBound
        } else {
            Why::HostMismatch
        };
        return Err(Refusal::new(
            why,
            format!("Host `{asked}` does not match the CONNECT target `{host}`"),
        ));
    }
    let (bound, unbound) = binding.bound_to(host, port);
    let strays: Vec<&str> = unbound
        .iter()
        .filter(|&&i| in_head(head, &creds[i].stub) || binding.disguised_in(i, head))
        .map(|&i| creds[i].name.as_str())
        .collect();
    if !strays.is_empty() {
        return Err(Refusal::new(Why::NotBound, stray_reason(&strays, host)));
    }
    // A compressed body is decoded before it is checked (and goes upstream decoded); one in a
    // coding the vault cannot decode cannot be checked, so it is refused.
    if !creds.is_empty() && super::decode::codings(head.headers).is_err() {
        return Err(Refusal::new(
            Why::Compressed,
            format!(
                "a request body to `{host}` in a coding lap cannot decode cannot be checked for credentials; send it uncompressed"
            ),
        ));
    }
    let (path_only, _) = head.path.split_once('?').unwrap_or((head.path, ""));
    // A bound stub is swapped only at its credential's injection points, in the forms they allow;
    // anywhere else it refuses the request.
    let query = head.path.split_once('?').map(|(_, q)| q);
    for &i in &bound {
        let c = &creds[i];
        let stub = c.stub.as_bytes();
        if contains(head.method.as_bytes(), stub) {
            return Err(not_injectable(c, &Place::Method));
        }
        if head.headers.keys().any(|n| contains(n.as_str().as_bytes(), stub)) {
            return Err(not_injectable(c, &Place::HeaderName));
        }
        if contains(path_only.as_bytes(), stub) || contains(&percent_decode(path_only.as_bytes()), stub) {
            return Err(not_injectable(c, &Place::Path));
        }
    }
    let mut swapped = BTreeSet::new();
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    let mut reflected = Vec::new();
    for (name, value) in head.headers {
        let place = || Place::Header(name.as_str().to_owned());
        let carried: Vec<usize> = bound
            .iter()
            .copied()
            .filter(|&i| contains_stub(value.as_bytes(), &creds[i].stub))
            .collect();
        let new = match carried.as_slice() {
            [] => value.clone(),
            [i] => {
                let c = &creds[*i];
                let Some((new, reflects)) = swap_in_header(name.as_str(), value.as_bytes(), c) else {
                    return Err(not_injectable(c, &place()));
                };
                reflected.extend(reflects);
                swapped.insert(*i);
                HeaderValue::from_bytes(&new)
                    .map_err(|_| Refusal::new(Why::BadRequest, "a rewritten header is not valid"))?
            }
            [_, second, ..] => return Err(not_injectable(&creds[*second], &place())),
        };
        headers.append(name.clone(), new);
    }
    let rewritten = match query {
        Some(query) => format!("{path_only}?{}", swap_in_query(query, &bound, creds, &mut swapped)?),
        None => path_only.to_owned(),
    };
    let path = PathAndQuery::try_from(rewritten.as_str())
        .map_err(|_| Refusal::new(Why::BadRequest, "the rewritten request path is not a valid URL"))?;
    if let Some(&i) = swapped
        .iter()
        .find(|&&i| !creds[i].allows_request(head.method, path_only))
    {
        return Err(outside_rules(&creds[i], head.method, path_only));
    }

    // The body (or a WebSocket's frames): swapped only for a credential that may go there, on a
    // request its rules allow; every other stub may not be in it.
    let mut body_swap = Vec::new();
    let mut guard_body = Vec::new();
    for &i in &bound {
        let c = &creds[i];
        if !c.inject.contains(&Injection::Body) {
            guard_body.push((i, Why::NotInjectable));
        } else if !c.allows_request(head.method, path_only) {
            guard_body.push((i, Why::Rule));
        } else {
            body_swap.push(i);
        }
    }
    guard_body.extend(unbound.iter().map(|&i| (i, Why::NotBound)));
    let swap = Substitutions::from_set(binding.body_swap(&body_swap));
    let websocket = is_websocket_upgrade(head.headers);
    if !websocket {
        strip_hop_by_hop(&mut headers);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    if !creds.is_empty() {
        // A range of a stored real value is a piece the scrubber cannot recognise: the whole
        // response is asked for, and scrubbed.
        headers.remove(header::RANGE);
        headers.remove(header::IF_RANGE);
    }
    let swap = Arc::new(swap);
    Ok(Plan {
        tally: Tally {
            head: swapped.into_iter().collect(),
            body_swap,
            swap: swap.clone(),
        },
        bound,
        path,
        headers,
        swap,
        guard_body,
        reflected,
        websocket,
        method: head.method.to_owned(),
        path_only: path_only.to_owned(),
        host: host.to_owned(),
    })
}

/// What an allowed absolute-form `http://` request does: nothing is swapped.
pub struct PlainPlan {
    /// The headers as they go upstream: hop-by-hop headers gone, `Accept-Encoding: identity`.
    pub headers: HeaderMap,
    /// Every credential's stub: none may pass in the body or a trailer.
    pub guard: Guard,
}

/// The refusal of a stub in a plain `http://` request.
pub const IN_CLEAR: &str = "credentials are only sent over HTTPS; a stub in a plain http:// request is refused";

/// Decides an absolute-form `http://` request: no stub of any credential may be anywhere in it
/// (method, header names and values with Basic decoded, path and query also percent-decoded).
pub fn decide_plain(binding: &Binding, head: &Head<'_>) -> Result<PlainPlan, Refusal> {
    if binding.credentials.iter().any(|c| in_head(head, &c.stub)) {
        return Err(Refusal::new(Why::NotBound, IN_CLEAR));
    }
    if !binding.credentials.is_empty() && super::decode::codings(head.headers).is_err() {
        return Err(Refusal::new(
            Why::Compressed,
            "a request body in a coding lap cannot decode cannot be checked for credentials; send it uncompressed",
        ));
    }
    let mut headers = head.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let stubs: Vec<Vec<u8>> = binding.credentials.iter().map(|c| c.stub.as_bytes().to_vec()).collect();
    Ok(PlainPlan {
        headers,
        guard: binding.guards.guard(stubs.clone(), stubs),
    })
}

/// Headers with every value rewritten.
pub struct Rewritten {
    pub headers: HeaderMap,
    /// (encoded new, encoded old) Basic tokens of the values that changed.
    pub reflected: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether a rewritten value was not a valid header value (it is left out of `headers`).
    pub invalid: bool,
    /// Whether a header was left out because its name carried a forbidden name part.
    pub dropped_name: bool,
}

/// Rewrites every header value with `subs` (`Authorization: Basic` decoded and re-encoded), and
/// leaves out every header whose name holds one of `forbidden_in_names` (lower case: names are):
/// the one header-rewrite loop of responses and trailers (real → stubs), and of request heads
/// while nothing else is enforced.
pub fn rewrite_headers(headers: &HeaderMap, subs: &Substitutions, forbidden_in_names: &[Vec<u8>]) -> Rewritten {
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut reflected = Vec::new();
    let mut invalid = false;
    let mut dropped_name = false;
    for (name, value) in headers {
        if forbidden_in_names.iter().any(|n| contains(name.as_str().as_bytes(), n)) {
            dropped_name = true;
            continue;
        }
        let Some(new) = subs.header_value(value.as_bytes()) else {
            out.append(name.clone(), value.clone());
            continue;
        };
        if let (Some(old_token), Some(new_token)) = (basic_token(value.as_bytes()), basic_token(&new)) {
            reflected.push((new_token.to_vec(), old_token.to_vec()));
        }
        match HeaderValue::from_bytes(&new) {
            Ok(new) => {
                out.append(name.clone(), new);
            }
            Err(_) => invalid = true,
        }
    }
    Rewritten {
        headers: out,
        reflected,
        invalid,
        dropped_name,
    }
}

/// The base64 part of an `Authorization: Basic …` value.
fn basic_token(value: &[u8]) -> Option<&[u8]> {
    let prefix = b"basic ";
    (value.len() > prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| value[prefix.len()..].trim_ascii())
}

pub fn stray_reason<S: AsRef<str>>(names: &[S], host: &str) -> String {
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    format!(
        "a stub of {} was sent to `{host}`, which it is not bound to",
        names.join(", ")
    )
}

/// Whether `stub` is anywhere in the head: the method, a header's name or value (Basic decoded),
/// the path or query (also percent-decoded).
fn in_head(head: &Head<'_>, stub: &str) -> bool {
    let needle = stub.as_bytes();
    contains(head.method.as_bytes(), needle)
        || contains(head.path.as_bytes(), needle)
        || contains(&percent_decode(head.path.as_bytes()), needle)
        || head
            .headers
            .iter()
            .any(|(n, v)| contains(n.as_str().as_bytes(), needle) || contains_stub(v.as_bytes(), stub))
}

/// Whether `needle` is in `haystack`, ignoring ASCII case (stubs and names are lower case; a stub
/// in upper case is still one).
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// `%XX` escapes decoded; anything else (a bad escape too) kept as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// `value` percent-encoded for a query: everything but RFC 3986 unreserved characters escaped.
fn percent_encode(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of header `name` with `c`'s stub swapped, if it is at one of `c`'s injection points
/// in one of the forms the spec allows; and the (new, old) Basic tokens when it was Basic.
#[allow(clippy::type_complexity)]
fn swap_in_header(name: &str, value: &[u8], c: &Credential) -> Option<(Vec<u8>, Option<(Vec<u8>, Vec<u8>)>)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (stub, real) = (c.stub.as_str(), c.value.expose());
    if name == header::AUTHORIZATION.as_str() {
        if !c.inject.contains(&Injection::Authorization) {
            return None;
        }
        let (scheme, rest) = text.split_once(|ch: char| ch.is_ascii_whitespace())?;
        let rest = rest.trim();
        return match scheme.to_ascii_lowercase().as_str() {
            "bearer" | "token" => (rest == stub).then(|| (format!("{scheme} {real}").into_bytes(), None)),
            "basic" => {
                use base64::Engine;
                let engine = base64::engine::general_purpose::STANDARD;
                let decoded = engine.decode(rest).ok()?;
                let decoded = std::str::from_utf8(&decoded).ok()?;
                let (user, pass) = decoded.split_once(':')?;
                let new = if pass == stub && !user.contains(stub) {
                    format!("{user}:{real}")
                } else if user == stub && !pass.contains(stub) {
                    format!("{real}:{pass}")
                } else {
                    return None;
                };
                let token = engine.encode(new);
                let reflects = (token.clone().into_bytes(), rest.as_bytes().to_vec());
                Some((format!("{scheme} {token}").into_bytes(), Some(reflects)))
            }
            _ => None,
        };
    }
    if !c.inject.contains(&Injection::Header(name.to_owned())) {
        return None;
    }
    if text == stub {
        return Some((real.as_bytes().to_vec(), None));
    }
    let (scheme, rest) = text.split_once(|ch: char| ch.is_ascii_whitespace())?;
    (scheme.eq_ignore_ascii_case("bearer") && rest.trim() == stub)
        .then(|| (format!("{scheme} {real}").into_bytes(), None))
}

/// The query with bound stubs swapped where a credential's `query:NAME` allows it (the whole value
/// of that parameter); a stub anywhere else in it is refused.
fn swap_in_query(
    query: &str,
    bound: &[usize],
    creds: &[Credential],
    swapped: &mut BTreeSet<usize>,
) -> Result<String, Refusal> {
    let mut pairs = Vec::new();
    for pair in query.split('&') {
        let (name, value) = match pair.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (pair, None),
        };
        let mut new_value = value.map(str::to_owned);
        for &i in bound {
            let c = &creds[i];
            let stub = c.stub.as_bytes();
            let place = || Place::Query(String::from_utf8_lossy(&percent_decode(name.as_bytes())).into_owned());
            if contains(&percent_decode(name.as_bytes()), stub) {
                return Err(not_injectable(c, &place()));
            }
            let Some(value) = value else { continue };
            if !contains(&percent_decode(value.as_bytes()), stub) {
                continue;
            }
            if value == c.stub && c.inject.contains(&Injection::Query(name.to_owned())) {
                new_value = Some(percent_encode(c.value.expose().as_bytes()));
                swapped.insert(i);
            } else {
                return Err(not_injectable(c, &place()));
            }
        }
        pairs.push(match new_value {
            Some(value) => format!("{name}={value}"),
            None => name.to_owned(),
        });
    }
    Ok(pairs.join("&"))
}

/// Whether `stub` is in a header value: as it is (in any ASCII case), or inside the base64 of
/// `Basic` credentials. Runs for every header of every request, so it compiles nothing.
fn contains_stub(value: &[u8], stub: &str) -> bool {
    use base64::Engine;
    let stub = stub.as_bytes();
    contains(value, stub)
        || basic_token(value)
            .and_then(|token| base64::engine::general_purpose::STANDARD.decode(token).ok())
            .is_some_and(|decoded| contains(&decoded, stub))
}

/// Whether `authority` (`host` or `host:port`) names `host:port`.
fn authority_is(authority: &str, host: &str, port: u16) -> bool {
    let Ok(parsed) = authority.parse::<hyper::http::uri::Authority>() else {
        return false;
    };
    let name = parsed
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    name.eq_ignore_ascii_case(host) && parsed.port_u16().unwrap_or(443) == port
}

pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use base64::Engine;

    const HOST: &str = "api.github.com";

    fn credential(name: &str, stub: &str, real: &str, host: &str, inject: &[&str], rules: &[&str]) -> Credential {
        Credential {
            name: name.into(),
            stub: stub.into(),
            value: Secret::new(real),
            hosts: vec![host.into()],
            inject: inject.iter().map(|p| p.parse().unwrap()).collect(),
            rules: rules.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn binding_with(github: Credential) -> Binding {
        Binding::new(
            vec![
                github,
                credential(
                    "OPENAI_API_KEY",
                    "stub_oa_1",
                    "sk-real",
                    "api.openai.com",
                    &["authorization"],
                    &[],
                ),
            ],
            Policy::new(&[], &[]),
        )
    }

    fn binding() -> Binding {
        binding_with(credential(
            "GITHUB_TOKEN",
            "stub_gh_1",
            "ghp_real",
            HOST,
            &["authorization", "header:x-api-key", "query:access_token"],
            &[],
        ))
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn head<'a>(path: &'a str, headers: &'a HeaderMap) -> Head<'a> {
        Head {
            method: "GET",
            authority: Some(HOST),
            path,
            headers,
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// The refusal of a request, which must be refused.
    fn refused(binding: &Binding, head: &Head<'_>) -> Refusal {
        match decide(binding, HOST, 443, head) {
            Ok(plan) => panic!("allowed: {:?} {:?}", plan.path, plan.headers),
            Err(refusal) => refusal,
        }
    }

    fn allowed(binding: &Binding, head: &Head<'_>) -> Plan {
        decide(binding, HOST, 443, head).map_err(|r| r.reason).unwrap()
    }

    #[test]
    fn a_bound_stub_in_authorization_is_swapped_and_hop_by_hop_headers_go() {
        for (sent, upstream) in [
            ("Bearer stub_gh_1", "Bearer ghp_real"),
            ("token stub_gh_1", "token ghp_real"),
            ("bearer   stub_gh_1", "bearer ghp_real"),
        ] {
            let h = headers(&[("authorization", sent), ("connection", "close")]);
            let plan = allowed(&binding(), &head("/user", &h));
            assert_eq!(plan.headers["authorization"], upstream);
            assert!(!plan.headers.contains_key("connection"));
            assert_eq!(plan.headers["accept-encoding"], "identity");
            assert_eq!(plan.tally.swapped(&binding()).0, ["GITHUB_TOKEN"]);
        }
    }

    #[test]
    fn basic_credentials_are_swapped_as_user_or_password_and_their_encoded_form_is_scrubbed_back() {
        for (sent, upstream) in [("x:stub_gh_1", "x:ghp_real"), ("stub_gh_1:x-oauth", "ghp_real:x-oauth")] {
            let h = headers(&[("authorization", &format!("Basic {}", b64(sent)))]);
            let plan = allowed(&binding(), &head("/", &h));
            assert_eq!(
                plan.headers["authorization"],
                format!("Basic {}", b64(upstream)).as_str()
            );
            assert_eq!(
                plan.reflected,
                vec![(b64(upstream).into_bytes(), b64(sent).into_bytes())]
            );
        }
    }

    #[test]
    fn a_declared_header_and_query_parameter_are_swapped_as_their_whole_value() {
        let h = headers(&[("x-api-key", " stub_gh_1 ")]);
        let plan = allowed(&binding(), &head("/x?a=1&access_token=stub_gh_1", &h));
        assert_eq!(plan.headers["x-api-key"], "ghp_real");
        assert_eq!(plan.path.as_str(), "/x?a=1&access_token=ghp_real");
    }

    #[test]
    fn a_bound_stub_anywhere_but_its_injection_points_is_not_injectable() {
        let b = binding();
        let auth = |v: &str| headers(&[("authorization", v)]);
        let cases: Vec<(HeaderMap, &str, &str, &str)> = vec![
            (headers(&[("x-other", "stub_gh_1")]), "/", "GET", "the `x-other` header"),
            (auth("Bearer stub_gh_1 extra"), "/", "GET", "the Authorization header"),
            (auth("Digest stub_gh_1"), "/", "GET", "the Authorization header"),
            (
                auth(&format!("Basic {}", b64("stub_gh_1:stub_gh_1"))),
                "/",
                "GET",
                "the Authorization header",
            ),
            (
                headers(&[("x-api-key", "prefix-stub_gh_1")]),
                "/",
                "GET",
                "the `x-api-key` header",
            ),
            (headers(&[("x-stub_gh_1", "1")]), "/", "GET", "a header name"),
            (headers(&[]), "/repos/stub_gh_1", "GET", "the request path"),
            (headers(&[]), "/repos/%73tub_gh_1", "GET", "the request path"),
            (headers(&[]), "/x?q=stub_gh_1", "GET", "the query parameter `q`"),
            (
                headers(&[]),
                "/x?access_token=a-stub_gh_1",
                "GET",
                "the query parameter `access_token`",
            ),
            (headers(&[]), "/x?stub_gh_1=1", "GET", "the query parameter `stub_gh_1`"),
            (headers(&[]), "/", "STUB_GH_1", "the request method"),
        ];
        for (h, path, method, place) in &cases {
            let refusal = refused(
                &b,
                &Head {
                    method,
                    ..head(path, h)
                },
            );
            assert_eq!(refusal.why, Why::NotInjectable, "{path} {h:?}: {}", refusal.reason);
            assert!(refusal.reason.contains(place), "{path} {h:?}: {}", refusal.reason);
            assert!(refusal.reason.contains("GITHUB_TOKEN"), "{}", refusal.reason);
            assert!(
                refusal
                    .reason
                    .ends_with("it may only be sent in: authorization, header:x-api-key, query:access_token"),
                "{}",
                refusal.reason
            );
        }
    }

    #[test]
    fn the_body_is_guarded_unless_the_credential_opts_in() {
        let h = headers(&[]);
        let plan = allowed(&binding(), &head("/", &h));
        assert!(plan.swap.is_empty());
        assert_eq!(plan.guard_body, vec![(0, Why::NotInjectable), (1, Why::NotBound)]);
        let refusal = plan.refusal(&binding(), &Trip::Body(0));
        assert_eq!(refusal.why, Why::NotInjectable);
        assert!(refusal.reason.contains("in the request body"), "{}", refusal.reason);
        let trailer = plan.refusal(&binding(), &Trip::Trailer("grpc-x".into(), 0));
        assert!(
            trailer.reason.contains("the request trailer `grpc-x`"),
            "{}",
            trailer.reason
        );

        let opted = binding_with(credential(
            "GITHUB_TOKEN",
            "stub_gh_1",
            "ghp_real",
            HOST,
            &["body"],
            &[],
        ));
        let plan = allowed(&opted, &head("/", &h));
        assert_eq!(plan.swap.replace_all(b"x stub_gh_1 y").as_ref(), b"x ghp_real y");
        assert_eq!(plan.guard_body, vec![(1, Why::NotBound)]);
    }

    #[test]
    fn rules_refuse_a_request_outside_them_that_carries_the_stub() {
        let ruled = binding_with(credential(
            "GITHUB_TOKEN",
            "stub_gh_1",
            "ghp_real",
            HOST,
            &["authorization", "body"],
            &["GET /repos/acme/**"],
        ));
        let h = headers(&[("authorization", "Bearer stub_gh_1")]);
        assert!(decide(&ruled, HOST, 443, &head("/repos/acme/x/issues", &h)).is_ok());
        let refusal = refused(&ruled, &head("/gists", &h));
        assert_eq!(refusal.why, Why::Rule);
        assert!(refusal.reason.contains("GET /repos/acme/**"), "{}", refusal.reason);
        let post = Head {
            method: "POST",
            ..head("/repos/acme/x", &h)
        };
        assert_eq!(refused(&ruled, &post).why, Why::Rule);
        // Without the stub aboard, the rules do not apply; in the body, the guard refuses it.
        let none = headers(&[]);
        let plan = allowed(&ruled, &head("/gists", &none));
        assert_eq!(plan.guard_body[0], (0, Why::Rule));
        assert_eq!(plan.refusal(&ruled, &Trip::Body(0)).why, Why::Rule);
    }

    #[test]
    fn a_stub_of_another_host_anywhere_in_the_head_is_refused_as_not_bound() {
        let b = binding();
        for (h, path, method) in [
            (headers(&[("x-key", "stub_oa_1")]), "/", "GET"),
            (headers(&[("x-stub_oa_1", "1")]), "/", "GET"),
            (headers(&[]), "/%73tub_oa_1", "GET"),
            (headers(&[]), "/", "stub_oa_1"),
            (
                headers(&[("authorization", &format!("Basic {}", b64("x:stub_oa_1")))]),
                "/",
                "GET",
            ),
        ] {
            let refusal = refused(
                &b,
                &Head {
                    method,
                    ..head(path, &h)
                },
            );
            assert_eq!(refusal.why, Why::NotBound, "{path} {method} {h:?}");
            assert!(refusal.reason.contains("OPENAI_API_KEY"), "{}", refusal.reason);
        }
    }

    #[test]
    fn another_host_in_host_is_a_mismatch_and_an_alert_with_a_stub_aboard() {
        let h = headers(&[]);
        let mut other = head("/", &h);
        other.authority = Some("evil.example");
        assert_eq!(refused(&binding(), &other).why, Why::HostMismatch);
        let h = headers(&[("authorization", "Bearer stub_gh_1")]);
        let mut other = head("/", &h);
        other.authority = Some("evil.example");
        assert_eq!(refused(&binding(), &other).why, Why::NotBound);
        // The CONNECT host is canonical; a trailing dot in Host names the same host.
        let mut dotted = head("/", &h);
        dotted.authority = Some("API.github.com.");
        assert!(decide(&binding(), HOST, 443, &dotted).is_ok());
    }

    #[test]
    fn a_disguised_stub_of_another_credential_in_the_head_is_stray() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode("stub_oa_1");
        let json: String = "stub_oa_1".chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let hex: String = "stub_oa_1".bytes().map(|b| format!("{b:02x}")).collect();
        for (name, value) in [
            ("x-data", b64.as_str()),
            ("x-data", json.as_str()),
            ("x-data", "1_ao_buts"),
        ] {
            let h = headers(&[(name, value)]);
            assert_eq!(refused(&binding(), &head("/", &h)).why, Why::NotBound, "{value}");
        }
        let path = format!("/x?q={hex}");
        assert_eq!(refused(&binding(), &head(&path, &headers(&[]))).why, Why::NotBound);
        // Its own host takes no disguise for a stray either: nothing else is in the head.
        assert!(decide(&binding(), HOST, 443, &head("/", &headers(&[("x-data", "plain")]))).is_ok());
    }

    #[test]
    fn a_compressed_body_is_decoded_and_one_lap_cannot_decode_is_refused_whenever_the_sandbox_has_credentials() {
        for coding in [("content-encoding", "gzip"), ("transfer-encoding", "gzip, chunked")] {
            let h = headers(&[coding]);
            assert!(
                decide(&binding(), HOST, 443, &head("/", &h)).is_ok(),
                "{coding:?} is decoded"
            );
        }
        for coding in [
            ("content-encoding", "x-unknown"),
            ("transfer-encoding", "compress, chunked"),
        ] {
            let h = headers(&[coding]);
            assert_eq!(refused(&binding(), &head("/", &h)).why, Why::Compressed);
            // Toward a host nothing is bound to as well: a stub inside would go unseen.
            let unbound = Head {
                authority: Some("example.com"),
                ..head("/", &h)
            };
            assert_eq!(
                decide(&binding(), "example.com", 443, &unbound).err().unwrap().why,
                Why::Compressed
            );
            let none = Binding::new(Vec::new(), Policy::new(&[], &[]));
            assert!(decide(&none, "example.com", 443, &unbound).is_ok());
        }
    }

    #[test]
    fn range_requests_are_made_whole_when_the_sandbox_has_credentials() {
        let h = headers(&[("range", "bytes=3-9"), ("if-range", "\"etag\"")]);
        let plan = allowed(&binding(), &head("/", &h));
        assert!(!plan.headers.contains_key("range") && !plan.headers.contains_key("if-range"));
        let none = Binding::new(Vec::new(), Policy::new(&[], &[]));
        let plan = decide(&none, HOST, 443, &head("/", &h)).map_err(|r| r.reason).unwrap();
        assert_eq!(plan.headers["range"], "bytes=3-9");
    }

    #[test]
    fn a_websocket_upgrade_keeps_its_upgrade_headers() {
        let h = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let plan = allowed(&binding(), &head("/ws", &h));
        assert!(plan.websocket);
        assert!(plan.headers.contains_key("upgrade"));
    }

    #[test]
    fn plain_http_refuses_any_stub_anywhere_in_the_head() {
        for h in [
            headers(&[("authorization", "Bearer stub_gh_1")]),
            headers(&[("authorization", &format!("Basic {}", b64("x:stub_gh_1")))]),
            headers(&[("x-stub_gh_1", "1")]),
        ] {
            assert_eq!(
                decide_plain(&binding(), &head("/", &h)).err().unwrap().why,
                Why::NotBound
            );
        }
        let h = headers(&[]);
        assert!(
            decide_plain(
                &binding(),
                &Head {
                    method: "stub_gh_1",
                    ..head("/", &h)
                }
            )
            .is_err()
        );
        assert!(decide_plain(&binding(), &head("/", &h)).is_ok());
    }

    #[test]
    fn response_headers_named_after_a_real_value_are_left_out() {
        let h = headers(&[("x-ghp_real", "1"), ("x-echo", "ghp_real")]);
        let b = binding();
        let out = rewrite_headers(&h, &b.scrubber(), &b.real_names());
        assert!(out.dropped_name);
        assert_eq!(out.headers.len(), 1);
        assert_eq!(out.headers["x-echo"], "stub_gh_1");
    }
}
