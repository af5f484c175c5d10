//! The `opencode` harness: `opencode serve` inside the sandbox, its HTTP API relayed.
//!
//! The sandbox's loopback is its own, so the relay runs in there too: a small bash bridge
//! ([`BRIDGE`], host `bash`, `curl` and `base64`, which local sandboxes see) starts the server on
//! 127.0.0.1:[`PORT`] and waits until it answers (each probe with a deadline of its own, the wait
//! as a whole `LAP_OPENCODE_READY_TIMEOUT` seconds, 120 unless the agent's `env` says otherwise;
//! every request but the event stream has a deadline too); reuses the kept opencode session when the server
//! still has it, else creates one (`POST /session`), and prints it as `S <base64 JSON>`; then prints
//! the server's event stream (`GET /event`, SSE `data:` lines) and performs the requests it reads on
//! its stdin (one per line: id, method, path, one-line JSON body, tab-separated), printing
//! `R <id> <status> <base64 body>` only for a request that failed (so the only other writer of
//! stdout, the event stream, is not interleaved in normal operation). This driver speaks that: a
//! turn waits for the session and for `server.connected` (the event stream is up), then is `POST
//! /session/:id/prompt_async`; an abort is `POST /session/:id/abort`; the bus (`message.updated`,
//! `message.part.updated`, `message.part.delta`, `session.error`, `session.idle`) maps onto our
//! events, filtered to our opencode session, the user's own message left out.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use serde_json::{Value, json};

use super::{Driver, Output, QUIET_ENV, unauthorized};
use crate::wire::api::Agent;
use crate::wire::messages::{
    CacheTokens, DeltaField, EventKind, Part, Tokens, ToolState, ToolStatus, TurnError, TurnOutcome,
};

/// The tool's program.
pub const PROGRAM: &str = "opencode";
/// Where `opencode serve` listens, on the sandbox's own loopback.
pub const PORT: u16 = 4096;
/// How long one readiness probe of the server may take (a probe that lands as the port opens is
/// never answered by opencode 1.18.33; the next one is, in about 0.3 s).
const PROBE_TIMEOUT_SECS: u32 = 2;
/// How long one request to the server (session, prompt, abort) may take; `prompt_async` and
/// `abort` answer at once, the turn itself comes over the event stream.
const REQUEST_TIMEOUT_SECS: u32 = 30;

/// The bridge: `$@` is the server's command line.
const BRIDGE: &str = r#"set -u
base="http://127.0.0.1:$LAP_OPENCODE_PORT"
ready_timeout=${LAP_OPENCODE_READY_TIMEOUT:-120}
"$@" >/tmp/lap-opencode.log 2>&1 &
server=$!
trap 'kill $server $events 2>/dev/null' EXIT
events=
SECONDS=0
# opencode serve 1.18.33 never answers a request that arrives as its port opens: each probe has a
# deadline of its own, and the wait as a whole has one too.
until curl -fsS --max-time "$LAP_OPENCODE_PROBE_TIMEOUT" -o /dev/null "$base/session" 2>/dev/null; do
  if ! kill -0 "$server" 2>/dev/null; then
    echo "opencode serve exited before it answered:" >&2; tail -c 2000 /tmp/lap-opencode.log >&2; exit 70
  fi
  if [ "$SECONDS" -ge "$ready_timeout" ]; then
    echo "opencode serve did not answer on 127.0.0.1:$LAP_OPENCODE_PORT within $ready_timeout s; its log ends:" >&2
    tail -c 1500 /tmp/lap-opencode.log >&2
    echo "hint: run \`lap exec SESSION -- opencode serve --port 4097\` to see it start; a slow machine may need LAP_OPENCODE_READY_TIMEOUT=SECONDS in the agent's --env" >&2
    exit 71
  fi
  sleep 0.1
done
session=${LAP_OPENCODE_SESSION:-}
if [ -n "$session" ] && curl -fsS --max-time "$LAP_OPENCODE_REQUEST_TIMEOUT" -o /tmp/lap-opencode.body "$base/session/$session" 2>/dev/null; then
  :
elif ! curl -fsS --max-time "$LAP_OPENCODE_REQUEST_TIMEOUT" -X POST -H 'content-type: application/json' --data-binary '{"title":"lap"}' \
    -o /tmp/lap-opencode.body "$base/session"; then
  echo "opencode serve did not create a session within $LAP_OPENCODE_REQUEST_TIMEOUT s: $(cat /tmp/lap-opencode.body 2>/dev/null)" >&2; exit 72
fi
printf 'S %s\n' "$(base64 -w0 /tmp/lap-opencode.body)"
curl -sSN "$base/event" &
events=$!
while IFS=$'\t' read -r id method path body; do
  out=$(curl -sS --max-time "$LAP_OPENCODE_REQUEST_TIMEOUT" -X "$method" -H 'content-type: application/json' ${body:+--data-binary "$body"} \
    -o /tmp/lap-opencode.body -w '%{http_code}' "$base$path") || out=000
  case $out in
    2??) ;;
    *) printf 'R %s %s %s\n' "$id" "$out" "$(base64 -w0 /tmp/lap-opencode.body 2>/dev/null)" ;;
  esac
done
"#;

#[derive(Debug, Default)]
pub struct OpenCode {
    next_id: u64,
    model: Option<(String, String)>,
    prompt: Option<String>,
    /// The kept opencode session, to reuse.
    resume: Option<String>,
    /// The opencode session, once the bridge named it.
    session: Option<String>,
    /// The event stream is up (`server.connected`).
    connected: bool,
    /// A user turn waiting for the session and the event stream.
    pending: Option<String>,
    /// A turn was handed over and has not gone idle yet.
    busy: bool,
    /// Messages of the user (their parts are not the reply).
    user_messages: HashSet<String>,
    /// Parts already started.
    parts: HashMap<String, &'static str>,
    usage: Option<Tokens>,
    cost: Option<f64>,
    /// The turn's error: name, message, the model API's HTTP status when it gave one.
    error: Option<(String, String, Option<u16>)>,
}

impl OpenCode {
    fn request(&mut self, method: &str, path: &str, body: Option<Value>) -> (u64, String) {
        self.next_id += 1;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        (self.next_id, format!("{}\t{method}\t{path}\t{body}", self.next_id))
    }

    fn prompt_line(&mut self, text: &str) -> String {
        let session = self.session.clone().unwrap_or_default();
        let mut body = json!({"parts": [{"type": "text", "text": text}]});
        if let Some((provider, model)) = &self.model {
            body["model"] = json!({"providerID": provider, "modelID": model});
        }
        if let Some(prompt) = &self.prompt {
            body["system"] = json!(prompt);
        }
        self.busy = true;
        self.usage = None;
        self.cost = None;
        self.error = None;
        self.request("POST", &format!("/session/{session}/prompt_async"), Some(body))
            .1
    }

    fn failed(&mut self, message: String) -> EventKind {
        self.busy = false;
        self.pending = None;
        EventKind::TurnCompleted {
            status: TurnOutcome::Failed,
            error: Some(TurnError {
                kind: "agent_error".to_owned(),
                message,
                http_status: None,
            }),
            usage: None,
            cost_usd: None,
        }
    }

    /// A failed request (the bridge reports only those).
    fn response(&mut self, rest: &str, out: &mut Output) {
        let mut fields = rest.splitn(3, ' ');
        let (Some(_id), Some(status), body) = (fields.next(), fields.next(), fields.next()) else {
            return;
        };
        let body = base64::engine::general_purpose::STANDARD
            .decode(body.unwrap_or_default().trim())
            .unwrap_or_default();
        if self.busy {
            let body = String::from_utf8_lossy(&body).into_owned();
            out.events
                .push(self.failed(format!("opencode refused the request ({status}): {body}")));
        }
    }

    /// The bridge's session line.
    fn session(&mut self, rest: &str, out: &mut Output) {
        let body = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .unwrap_or_default();
        let created: Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(session) = created.get("id").and_then(Value::as_str) else {
            return;
        };
        self.session = Some(session.to_owned());
        out.events.push(EventKind::SessionStarted {
            native_session_id: session.to_owned(),
            model: self.model.as_ref().map(|(p, m)| format!("{p}/{m}")),
            cwd: created.get("directory").and_then(Value::as_str).map(str::to_owned),
        });
        self.flush(out);
    }

    /// Hands over the waiting turn once the session and the event stream are there.
    fn flush(&mut self, out: &mut Output) {
        if self.session.is_some()
            && self.connected
            && let Some(text) = self.pending.take()
        {
            let line = self.prompt_line(&text);
            out.replies.push(line);
        }
    }

    fn event(&mut self, event: &Value, out: &mut Output) {
        if event.get("type").and_then(Value::as_str) == Some("server.connected") {
            self.connected = true;
            self.flush(out);
            return;
        }
        let props = event.get("properties").cloned().unwrap_or_default();
        let session_of = props
            .get("sessionID")
            .or_else(|| props.pointer("/info/sessionID"))
            .or_else(|| props.pointer("/part/sessionID"))
            .and_then(Value::as_str);
        if session_of.is_none() || session_of != self.session.as_deref() {
            return;
        }
        match event.get("type").and_then(Value::as_str) {
            Some("message.updated") => {
                let Some(info) = props.get("info") else { return };
                let id = info.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                if info.get("role").and_then(Value::as_str) == Some("user") {
                    self.user_messages.insert(id);
                    return;
                }
                if let Some(tokens) = info.get("tokens") {
                    let n = |p: &str| tokens.pointer(p).and_then(Value::as_u64).unwrap_or(0);
                    self.usage = Some(Tokens {
                        input: n("/input"),
                        output: n("/output"),
                        reasoning: n("/reasoning"),
                        cache: CacheTokens {
                            read: n("/cache/read"),
                            write: n("/cache/write"),
                        },
                    });
                }
                if let Some(cost) = info.get("cost").and_then(Value::as_f64) {
                    self.cost = Some(cost);
                }
                if let Some(error) = info.get("error").filter(|e| !e.is_null()) {
                    self.error = Some(error_of(error));
                }
            }
            Some("message.part.updated") => {
                let Some(part) = props.get("part") else { return };
                let message = part.get("messageID").and_then(Value::as_str).unwrap_or_default();
                if self.user_messages.contains(message) {
                    return;
                }
                let Some((kind, item)) = part_of(part) else { return };
                let id = item.id().to_owned();
                if self.parts.insert(id, kind).is_none() {
                    out.events.push(EventKind::ItemStarted { item });
                } else {
                    out.events.push(EventKind::ItemCompleted { item });
                }
            }
            Some("message.part.delta") => {
                let message = props.get("messageID").and_then(Value::as_str).unwrap_or_default();
                let (Some(part_id), Some(delta)) = (
                    props.get("partID").and_then(Value::as_str),
                    props.get("delta").and_then(Value::as_str),
                ) else {
                    return;
                };
                if self.user_messages.contains(message) {
                    return;
                }
                let field = match props.get("field").and_then(Value::as_str) {
                    Some("reasoning") => DeltaField::Reasoning,
                    _ => DeltaField::Text,
                };
                if !self.parts.contains_key(part_id) {
                    // The empty part first: items are started before their deltas.
                    let (kind, item) = if field == DeltaField::Reasoning {
                        (
                            "reasoning",
                            Part::Reasoning {
                                id: part_id.to_owned(),
                                text: String::new(),
                            },
                        )
                    } else {
                        (
                            "text",
                            Part::Text {
                                id: part_id.to_owned(),
                                text: String::new(),
                            },
                        )
                    };
                    self.parts.insert(part_id.to_owned(), kind);
                    out.events.push(EventKind::ItemStarted { item });
                }
                out.events.push(EventKind::ItemDelta {
                    item_id: part_id.to_owned(),
                    field,
                    delta: delta.to_owned(),
                });
            }
            Some("session.error") => {
                if let Some(error) = props.get("error") {
                    self.error = Some(error_of(error));
                }
            }
            Some("session.idle") if self.busy => {
                self.busy = false;
                let error = self.error.take();
                let status = match &error {
                    Some((name, _, _)) if name == "MessageAbortedError" => TurnOutcome::Interrupted,
                    Some(_) => TurnOutcome::Failed,
                    None => TurnOutcome::Completed,
                };
                out.events.push(EventKind::TurnCompleted {
                    status,
                    error: error.map(|(name, message, http_status)| {
                        let (message, http_status) = unauthorized("opencode", message, http_status);
                        TurnError {
                            kind: if status == TurnOutcome::Interrupted {
                                "aborted".to_owned()
                            } else {
                                name
                            },
                            message,
                            http_status,
                        }
                    }),
                    usage: self.usage.take(),
                    cost_usd: self.cost.take(),
                });
            }
            _ => {}
        }
    }
}

impl Driver for OpenCode {
    fn argv(&mut self, agent: &Agent, resume: Option<&str>) -> Vec<String> {
        self.resume = resume.map(str::to_owned);
        self.model = agent
            .model
            .as_deref()
            .and_then(|m| m.split_once('/'))
            .map(|(p, m)| (p.to_owned(), m.to_owned()));
        self.prompt = agent.prompt.clone().filter(|p| !p.trim().is_empty());
        let mut argv = vec![
            "env".to_owned(),
            format!("LAP_OPENCODE_PORT={PORT}"),
            format!("LAP_OPENCODE_SESSION={}", self.resume.clone().unwrap_or_default()),
            format!("LAP_OPENCODE_PROBE_TIMEOUT={PROBE_TIMEOUT_SECS}"),
            format!("LAP_OPENCODE_REQUEST_TIMEOUT={REQUEST_TIMEOUT_SECS}"),
        ];
        argv.extend(QUIET_ENV.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend([
            "bash".to_owned(),
            "-c".to_owned(),
            BRIDGE.to_owned(),
            "lap-opencode".to_owned(),
        ]);
        let serve = ["serve", "--hostname", "127.0.0.1", "--port"].map(str::to_owned);
        match agent.command.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
            Some(command) => {
                argv.extend([
                    "bash".to_owned(),
                    "-c".to_owned(),
                    format!("exec {command} \"$@\""),
                    PROGRAM.to_owned(),
                ]);
            }
            None => argv.push(PROGRAM.to_owned()),
        }
        argv.extend(serve);
        argv.push(PORT.to_string());
        argv
    }

    fn user_turn(&mut self, text: &str) -> Vec<String> {
        if self.session.is_some() && self.connected {
            return vec![self.prompt_line(text)];
        }
        self.pending = Some(text.to_owned());
        Vec::new()
    }

    fn interrupt(&mut self) -> Option<String> {
        let session = self.session.clone()?;
        Some(
            self.request("POST", &format!("/session/{session}/abort"), Some(json!({})))
                .1,
        )
    }

    fn line(&mut self, line: &str) -> Output {
        let mut out = Output::default();
        if let Some(rest) = line.strip_prefix("R ") {
            self.response(rest, &mut out);
        } else if let Some(rest) = line.strip_prefix("S ") {
            self.session(rest, &mut out);
        } else if let Some(data) = line.strip_prefix("data:")
            && let Ok(event) = serde_json::from_str::<Value>(data.trim_start())
        {
            self.event(&event, &mut out);
        }
        out
    }
}

/// An opencode error's name, message and (for an `APIError`) the model API's HTTP status.
fn error_of(error: &Value) -> (String, String, Option<u16>) {
    let name = error.get("name").and_then(Value::as_str).unwrap_or("Error").to_owned();
    let message = error
        .pointer("/data/message")
        .or_else(|| error.get("message"))
        .and_then(Value::as_str)
        .unwrap_or(&name)
        .to_owned();
    let status = error
        .pointer("/data/statusCode")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    (name, message, status)
}

/// The part an opencode part becomes (`None`: `step-start`, `step-finish` and others not shown).
fn part_of(part: &Value) -> Option<(&'static str, Part)> {
    let id = part.get("id").and_then(Value::as_str)?.to_owned();
    let text = part.get("text").and_then(Value::as_str).unwrap_or_default().to_owned();
    match part.get("type").and_then(Value::as_str)? {
        "text" => Some(("text", Part::Text { id, text })),
        "reasoning" => Some(("reasoning", Part::Reasoning { id, text })),
        "tool" => {
            let state = part.get("state").cloned().unwrap_or_default();
            let status = match state.get("status").and_then(Value::as_str) {
                Some("completed") => ToolStatus::Completed,
                Some("error") => ToolStatus::Error,
                Some("running") => ToolStatus::Running,
                _ => ToolStatus::Pending,
            };
            let as_text = |v: Option<&Value>| {
                v.filter(|v| !v.is_null())
                    .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
            };
            Some((
                "tool",
                Part::Tool {
                    id,
                    tool: part.get("tool").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    call_id: part
                        .get("callID")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    state: ToolState {
                        status,
                        input: state.get("input").cloned().unwrap_or(json!({})),
                        output: as_text(state.get("output")),
                        error: as_text(state.get("error")),
                    },
                },
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> Agent {
        serde_json::from_value(json!({
            "id": uuid::Uuid::nil(), "name": "o", "harness_id": "opencode", "supports_tui": false,
            "command": null, "repo_url": null, "branch": "main", "prompt": null, "model": null,
            "env": {}, "credentials": [], "env_var_hosts": {}, "allow_out": [], "deny_out": [],
            "created_at": "", "updated_at": ""
        }))
        .unwrap()
    }

    #[test]
    fn every_request_of_the_bridge_but_the_event_stream_has_a_deadline() {
        let argv = OpenCode::default().argv(&agent(), None);
        assert!(argv.contains(&format!("LAP_OPENCODE_PROBE_TIMEOUT={PROBE_TIMEOUT_SECS}")));
        assert!(argv.contains(&format!("LAP_OPENCODE_REQUEST_TIMEOUT={REQUEST_TIMEOUT_SECS}")));
        let curls: Vec<&str> = BRIDGE.lines().filter(|l| l.contains("curl ")).collect();
        assert_eq!(curls.len(), 5, "{curls:#?}");
        for line in curls {
            assert!(
                line.contains("--max-time") || line.contains("/event\""),
                "a request without a deadline: {line}"
            );
        }
    }

    #[test]
    fn a_401_from_the_model_api_fails_the_turn_with_the_credentials_hint() {
        let mut oc = OpenCode::default();
        oc.argv(&agent(), None);
        let created = base64::engine::general_purpose::STANDARD.encode(r#"{"id":"ses_1","directory":"/w"}"#);
        oc.line(&format!("S {created}"));
        oc.line(r#"data: {"type":"server.connected","properties":{}}"#);
        assert_eq!(oc.user_turn("hi").len(), 1);
        let error = json!({"type": "session.error", "properties": {"sessionID": "ses_1", "error": {
            "name": "APIError", "data": {"message": "Incorrect API key provided: stub****", "statusCode": 401}}}});
        oc.line(&format!("data: {error}"));
        let out = oc.line(r#"data: {"type":"session.idle","properties":{"sessionID":"ses_1"}}"#);
        let [
            EventKind::TurnCompleted {
                status,
                error: Some(error),
                ..
            },
        ] = out.events.as_slice()
        else {
            panic!("{:?}", out.events)
        };
        assert_eq!(*status, TurnOutcome::Failed);
        assert_eq!(error.kind, "APIError");
        assert_eq!(error.http_status, Some(401));
        assert!(error.message.contains("lap agents show"), "{}", error.message);
        assert!(
            error.message.contains("opencode's `openai` provider"),
            "{}",
            error.message
        );
    }
}
