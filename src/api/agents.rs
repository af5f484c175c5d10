//! Agent routes: list, create, show, update, delete. Validation of agent input lives here.
//!
//! `{id}` accepts an agent's UUID or its name. Names match `^[a-z0-9][a-z0-9-]{0,62}$`, are unique
//! (409) and are never UUIDs, so a name cannot be read as an id. Credential values are write-only:
//! responses carry names, bound hosts, injection points, request rules and fingerprints. A new
//! credential given no injection points gets its preset's ([`default_injection`]); an existing one
//! keeps its own unless new ones are given.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::secret::Secret;
use crate::store::teams::Owned;
use crate::store::{AgentPatch, NewAgent, NewCredential};
use crate::tools;
use crate::wire::api::{
    AGENT_PAGE_DEFAULT, AGENT_PAGE_MAX, Agent, AgentLimits, AgentList, AgentVolume, CreateAgent, CredentialInfo,
    CredentialInput, ErrorBody, UpdateAgent,
};
use crate::wire::teams::Role;
use crate::wire::vault::{Injection, MAX_INJECTIONS, MAX_RULES, RequestRule, default_injection};

use super::auth::Principal;
use super::json::{ApiJson, ApiQuery};
use super::{ApiError, AppState};

/// Most credentials one agent may hold.
const MAX_CREDENTIALS: usize = 50;
/// Longest credential value accepted.
const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// Most plain environment variables one agent may hold.
const MAX_ENV: usize = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default 50); values outside 1..=200 are clamped into it, as LAP does.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    limit: Option<u32>,
    /// How many agents to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    offset: Option<u32>,
    /// Case-insensitive substring of name, id or harness.
    search: Option<String>,
}

/// List agents, newest first.
#[utoipa::path(get, path = "/api/v1/managed_agents/agents", tag = "agents", params(ListQuery),
    security(("master_key" = [])),
    responses((status = 200, body = AgentList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<AgentList>, ApiError> {
    let limit = query.limit.unwrap_or(AGENT_PAGE_DEFAULT).clamp(1, AGENT_PAGE_MAX);
    let offset = query.offset.unwrap_or(0);
    let (data, total) = state
        .store
        .list_agents(query.search, limit, offset, principal.scope())
        .await?;
    Ok(Json(AgentList {
        data,
        total,
        limit,
        offset,
    }))
}

/// Create an agent.
#[utoipa::path(post, path = "/api/v1/managed_agents/agents", tag = "agents", request_body = CreateAgent,
    security(("master_key" = [])),
    responses((status = 200, body = Agent), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<Json<Agent>, ApiError> {
    let agent = validate_create(body)?;
    let mut created = state.store.create_agent(agent).await?;
    // A member's agent is theirs; an admin's (or the master key's) is the team's.
    if principal.role() == Role::Member {
        created.owner = principal.owns(&state.store, Owned::Agent, created.id).await?;
    }
    Ok(Json(state.control.with_volume_sizes(created).await))
}

/// Show one agent, by id or name.
#[utoipa::path(get, path = "/api/v1/managed_agents/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "agent UUID or name")), security(("master_key" = [])),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Agent>, ApiError> {
    let agent = find(&state, &id).await?;
    Ok(Json(state.control.with_volume_sizes(agent).await))
}

/// Change an agent. Fields left out stay as they are.
#[utoipa::path(patch, path = "/api/v1/managed_agents/agents/{id}", tag = "agents", request_body = UpdateAgent,
    params(("id" = String, Path, description = "agent UUID or name")), security(("master_key" = [])),
    responses((status = 200, body = Agent), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<Agent>, ApiError> {
    let agent = find(&state, &id).await?;
    let patch = validate_update(&agent, body)?;
    let volumes_changed = patch.volumes.is_some();
    let updated = state
        .store
        .update_agent(agent.id, patch)
        .await?
        .ok_or_else(|| agent_not_found(&id))?;
    if volumes_changed {
        // A volume dropped from the agent takes its data with it.
        state.control.prune_volumes(updated.id, &updated.volumes).await?;
    }
    Ok(Json(state.control.with_volume_sizes(updated).await))
}

/// Delete an agent: its live sessions are stopped first, then it and its sessions are removed.
#[utoipa::path(delete, path = "/api/v1/managed_agents/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "agent UUID or name")), security(("master_key" = [])),
    responses((status = 204, description = "deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let agent = find(&state, &id).await?;
    if state.control.delete_agent(agent.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(agent_not_found(&id))
    }
}

pub async fn find(state: &AppState, id: &str) -> Result<Agent, ApiError> {
    state.store.find_agent(id).await?.ok_or_else(|| agent_not_found(id))
}

pub(super) fn agent_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("agent `{id}` not found"))
        .hint("`lap agents list` shows the agents that exist; see docs/troubleshooting.md#agent-not-found")
}

fn validate_create(body: CreateAgent) -> Result<NewAgent, ApiError> {
    validate_name(&body.name)?;
    let harness_id = body.harness_id.unwrap_or_else(|| "opencode".to_owned());
    validate_harness(&harness_id)?;
    let mut credentials = Vec::new();
    for input in body.credentials {
        let input = with_maps(input, &body.env_var_inject, &body.env_var_rules);
        credentials.push(validate_credential(input, None)?);
    }
    for (name, value) in body.env_vars {
        let input = CredentialInput {
            hosts: body.env_var_hosts.get(&name).cloned().unwrap_or_default(),
            name,
            value,
            ..CredentialInput::default()
        };
        credentials.push(validate_credential(
            with_maps(input, &body.env_var_inject, &body.env_var_rules),
            None,
        )?);
    }
    for (field, names) in [
        ("env_var_hosts", body.env_var_hosts.keys().collect::<Vec<_>>()),
        ("env_var_inject", body.env_var_inject.keys().collect()),
        ("env_var_rules", body.env_var_rules.keys().collect()),
    ] {
        if let Some(name) = names.into_iter().find(|n| !credentials.iter().any(|c| &c.name == *n)) {
            return Err(
                ApiError::bad_request(format!("{field} names `{name}`, which is not a credential"))
                    .hint("name only credentials given in `credentials` or `env_vars`"),
            );
        }
    }
    check_credential_set(
        &credentials.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        &body.env,
    )?;
    validate_env(&body.env)?;
    Ok(NewAgent {
        name: body.name,
        harness_id,
        command: non_empty(body.command),
        repo_url: non_empty(body.repo_url).map(validate_repo).transpose()?,
        branch: validate_branch(body.branch.unwrap_or_else(|| "main".to_owned()))?,
        prompt: non_empty(body.prompt),
        model: non_empty(body.model),
        env: body.env,
        credentials,
        allow_out: validate_egress("allow_out", body.allow_out)?,
        deny_out: validate_egress("deny_out", body.deny_out)?,
        limits: validate_limits(body.limits)?,
        volumes: validate_volumes(body.volumes)?,
    })
}

fn validate_update(agent: &Agent, body: UpdateAgent) -> Result<AgentPatch, ApiError> {
    if let Some(name) = &body.name {
        validate_name(name)?;
    }
    if let Some(harness_id) = &body.harness_id {
        validate_harness(harness_id)?;
    }
    let stored = |name: &str| agent.credentials.iter().find(|c| c.name == name);
    let mut upsert = Vec::new();
    for input in body.credentials {
        let input = with_maps(input, &body.env_var_inject, &body.env_var_rules);
        let existing = stored(&input.name);
        upsert.push(validate_credential(input, existing)?);
    }
    for (name, value) in body.env_vars {
        let input = CredentialInput {
            hosts: body.env_var_hosts.get(&name).cloned().unwrap_or_default(),
            name,
            value,
            ..CredentialInput::default()
        };
        let input = with_maps(input, &body.env_var_inject, &body.env_var_rules);
        let existing = stored(&input.name);
        upsert.push(validate_credential(input, existing)?);
    }
    let mut reinject = BTreeMap::new();
    for (name, points) in body.env_var_inject {
        if upsert.iter().any(|c| c.name == name) {
            continue;
        }
        if stored(&name).is_none() {
            return Err(
                ApiError::bad_request(format!("env_var_inject names `{name}`, which is not a credential"))
                    .hint("add the credential first, with its value"),
            );
        }
        reinject.insert(name.clone(), validate_inject(&name, points)?);
    }
    let mut rerule = BTreeMap::new();
    for (name, rules) in body.env_var_rules {
        if upsert.iter().any(|c| c.name == name) {
            continue;
        }
        if stored(&name).is_none() {
            return Err(
                ApiError::bad_request(format!("env_var_rules names `{name}`, which is not a credential"))
                    .hint("add the credential first, with its value"),
            );
        }
        rerule.insert(name.clone(), validate_rules(&name, rules)?);
    }
    let mut rebind = BTreeMap::new();
    for (name, hosts) in body.env_var_hosts {
        if upsert.iter().any(|c| c.name == name) {
            continue;
        }
        if !agent.credentials.iter().any(|c| c.name == name) {
            return Err(
                ApiError::bad_request(format!("env_var_hosts names `{name}`, which is not a credential"))
                    .hint("add the credential first, with its value"),
            );
        }
        rebind.insert(name, validate_hosts(hosts)?);
    }
    for name in &body.remove_credentials {
        if !agent.credentials.iter().any(|c| &c.name == name) {
            return Err(ApiError::bad_request(format!(
                "agent `{}` has no credential `{name}`",
                agent.name
            )));
        }
    }
    let names: Vec<&str> = agent
        .credentials
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !body.remove_credentials.iter().any(|r| r == n) && !upsert.iter().any(|c| c.name == *n))
        .chain(upsert.iter().map(|c| c.name.as_str()))
        .collect();
    let env = body.env.as_ref().unwrap_or(&agent.env);
    validate_env(env)?;
    check_credential_set(&names, env)?;
    Ok(AgentPatch {
        name: body.name,
        harness_id: body.harness_id,
        command: body.command.map(|v| non_empty(Some(v))),
        repo_url: body
            .repo_url
            .map(|v| non_empty(Some(v)).map(validate_repo).transpose())
            .transpose()?,
        branch: body.branch.map(validate_branch).transpose()?,
        prompt: body.prompt.map(|v| non_empty(Some(v))),
        model: body.model.map(|v| non_empty(Some(v))),
        env: body.env,
        upsert_credentials: upsert,
        rebind,
        reinject,
        rerule,
        remove_credentials: body.remove_credentials,
        allow_out: body.allow_out.map(|v| validate_egress("allow_out", v)).transpose()?,
        deny_out: body.deny_out.map(|v| validate_egress("deny_out", v)).transpose()?,
        limits: body.limits.map(validate_limits).transpose()?,
        volumes: body.volumes.map(validate_volumes).transpose()?,
    })
}

fn validate_volumes(volumes: Vec<AgentVolume>) -> Result<Vec<AgentVolume>, ApiError> {
    crate::control::volumes::validate(volumes).map_err(|e| ApiError::bad_request(e.message).hint(e.hint))
}

/// Bounds of the agent's resource limits.
const MEMORY_MB: std::ops::RangeInclusive<u64> = 16..=1_048_576;
const PIDS: std::ops::RangeInclusive<u64> = 16..=1_000_000;
const CPUS: std::ops::RangeInclusive<f64> = 0.01..=1024.0;

fn validate_limits(limits: AgentLimits) -> Result<AgentLimits, ApiError> {
    let out_of_range = |field: &str, value: String, range: String| {
        ApiError::bad_request(format!("invalid limits.{field} `{value}`: it must be {range}"))
            .hint("leave a limit out to use the server's default")
    };
    if let Some(mb) = limits.memory_mb
        && !MEMORY_MB.contains(&mb)
    {
        let range = format!("{} to {} (MiB)", MEMORY_MB.start(), MEMORY_MB.end());
        return Err(out_of_range("memory_mb", mb.to_string(), range));
    }
    if let Some(pids) = limits.pids
        && !PIDS.contains(&pids)
    {
        let range = format!("{} to {}", PIDS.start(), PIDS.end());
        return Err(out_of_range("pids", pids.to_string(), range));
    }
    if let Some(cpus) = limits.cpus
        && !CPUS.contains(&cpus)
    {
        let range = format!("{} to {} (fractions allowed)", CPUS.start(), CPUS.end());
        return Err(out_of_range("cpus", cpus.to_string(), range));
    }
    Ok(limits)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub fn validate_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok && uuid::Uuid::parse_str(name).is_ok() {
        // `{id}` routes read a UUID as an id, so an agent with such a name could not be found by it.
        Err(
            ApiError::bad_request(format!("invalid agent name `{name}`: it reads as a UUID"))
                .hint("agents are found by id or name, so a name must not look like an id"),
        )
    } else if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("invalid agent name `{name}`"))
            .hint("names are 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit"))
    }
}

fn validate_harness(id: &str) -> Result<(), ApiError> {
    match tools::find(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::bad_request(format!(
            "unknown harness_id \"{id}\". Valid: {}",
            tools::ids()
        ))),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if env.len() > MAX_ENV {
        return Err(ApiError::bad_request(format!(
            "too many env variables ({}, at most {MAX_ENV})",
            env.len()
        )));
    }
    for key in env.keys() {
        if !is_env_name(key) {
            return Err(ApiError::bad_request(format!("invalid env variable name `{key}`"))
                .hint("names match ^[A-Za-z_][A-Za-z0-9_]*$"));
        }
    }
    Ok(())
}

fn check_credential_set(names: &[&str], env: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if names.len() > MAX_CREDENTIALS {
        return Err(ApiError::bad_request(format!(
            "too many credentials ({}, at most {MAX_CREDENTIALS})",
            names.len()
        )));
    }
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        if seen.contains(name) {
            return Err(ApiError::bad_request(format!("credential `{name}` is given twice")));
        }
        if env.contains_key(*name) {
            return Err(
                ApiError::bad_request(format!("`{name}` is both a plain env variable and a credential"))
                    .hint("a credential's stub is what the sandbox sees under that name; drop it from env"),
            );
        }
        seen.push(name);
    }
    Ok(())
}

/// `input` with its injection points and rules taken from the `env_var_inject`/`env_var_rules` maps
/// where it gives none itself.
fn with_maps(
    mut input: CredentialInput,
    inject: &BTreeMap<String, Vec<String>>,
    rules: &BTreeMap<String, Vec<String>>,
) -> CredentialInput {
    if input.inject.is_none() {
        input.inject = inject.get(&input.name).cloned();
    }
    if input.rules.is_none() {
        input.rules = rules.get(&input.name).cloned();
    }
    input
}

/// A credential to store. `existing` is the stored credential of that name, if any: its injection
/// points and rules stay unless new ones are given; a new one gets its preset's points and no rules.
fn validate_credential(input: CredentialInput, existing: Option<&CredentialInfo>) -> Result<NewCredential, ApiError> {
    if !is_env_name(&input.name) {
        return Err(
            ApiError::bad_request(format!("invalid credential name `{}`", input.name))
                .hint("credential names are environment variable names: ^[A-Za-z_][A-Za-z0-9_]*$"),
        );
    }
    if input.value.is_empty() {
        return Err(ApiError::bad_request(format!(
            "credential `{}` has an empty value",
            input.name
        )));
    }
    if input.value.chars().any(char::is_control) {
        return Err(
            ApiError::bad_request(format!("credential `{}` contains control characters", input.name))
                .hint("a trailing newline from a file or `echo` is the usual cause; `--credential-file` strips it"),
        );
    }
    if input.value.len() > MAX_CREDENTIAL_BYTES {
        return Err(ApiError::bad_request(format!(
            "credential `{}` is longer than {MAX_CREDENTIAL_BYTES} bytes",
            input.name
        )));
    }
    // A credential is only ever sent to hosts it is bound to: one with none could never be used,
    // and LAP's "unbound means anywhere" is the hole this refuses to copy.
    let hosts = if input.hosts.is_empty() {
        match crate::wire::api::preset_hosts(&input.name) {
            Some(preset) => preset,
            None => {
                return Err(
                    ApiError::bad_request(format!("credential `{}` is bound to no host", input.name)).hint(format!(
                        "name the hosts it may be sent to, e.g. `--credential {}@api.example.com`",
                        input.name
                    )),
                );
            }
        }
    } else {
        input.hosts
    };
    let inject = match input.inject {
        Some(points) => validate_inject(&input.name, points)?,
        None => existing.map_or_else(|| default_injection(&input.name), |c| c.inject.clone()),
    };
    let rules = match input.rules {
        Some(rules) => validate_rules(&input.name, rules)?,
        None => existing.map(|c| c.rules.clone()).unwrap_or_default(),
    };
    Ok(NewCredential {
        hosts: validate_hosts(hosts)?,
        name: input.name,
        value: Secret::new(input.value),
        inject,
        rules,
    })
}

/// A credential's injection points: each parsed, duplicates dropped, at least one.
fn validate_inject(name: &str, points: Vec<String>) -> Result<Vec<Injection>, ApiError> {
    if points.is_empty() {
        return Err(ApiError::bad_request(format!(
            "credential `{name}` has no injection point; it would never be sent"
        ))
        .hint("give at least one: `authorization`, `header:NAME`, `query:NAME` or `body`"));
    }
    if points.len() > MAX_INJECTIONS {
        return Err(ApiError::bad_request(format!(
            "credential `{name}` has {} injection points, at most {MAX_INJECTIONS}",
            points.len()
        )));
    }
    let mut out: Vec<Injection> = Vec::new();
    for point in points {
        let parsed: Injection = point.parse().map_err(|e: crate::wire::vault::InjectionError| {
            ApiError::bad_request(format!("credential `{name}`: {e}")).hint(e.hint())
        })?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// A credential's request rules: each parsed, duplicates dropped (none: any request).
fn validate_rules(name: &str, rules: Vec<String>) -> Result<Vec<RequestRule>, ApiError> {
    if rules.len() > MAX_RULES {
        return Err(ApiError::bad_request(format!(
            "credential `{name}` has {} rules, at most {MAX_RULES}",
            rules.len()
        )));
    }
    let mut out: Vec<RequestRule> = Vec::new();
    for rule in rules {
        let parsed: RequestRule = rule.parse().map_err(|e: crate::wire::vault::RuleError| {
            ApiError::bad_request(format!("credential `{name}`: {e}")).hint(e.hint())
        })?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// A host pattern: `host`, `*.suffix`, optionally `:port`.
fn validate_hosts(hosts: Vec<String>) -> Result<Vec<String>, ApiError> {
    for host in &hosts {
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host.as_str(), None),
        };
        let name = name.strip_prefix("*.").unwrap_or(name);
        let name_ok = !name.is_empty()
            && host.len() <= 253
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !name.starts_with('.')
            && !name.ends_with('.');
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !name_ok || !port_ok {
            return Err(ApiError::bad_request(format!("invalid host pattern `{host}`"))
                .hint("use `api.example.com`, `*.example.com` or `host:port`"));
        }
    }
    Ok(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect())
}

/// An egress rule: a domain, `*.suffix`, an IPv4 address or a CIDR block.
fn validate_egress(field: &str, entries: Vec<String>) -> Result<Vec<String>, ApiError> {
    for entry in &entries {
        let body = entry.strip_prefix("*.").unwrap_or(entry);
        let (body, prefix) = match body.split_once('/') {
            Some((body, prefix)) => (body, Some(prefix)),
            None => (body, None),
        };
        let ok = !body.is_empty()
            && entry.len() <= 253
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= 32));
        if !ok {
            return Err(ApiError::bad_request(format!("invalid {field} entry `{entry}`"))
                .hint("use a domain, `*.suffix`, an IPv4 address or a CIDR block such as 10.0.0.0/8"));
        }
    }
    Ok(entries.into_iter().map(|e| e.to_ascii_lowercase()).collect())
}

fn validate_repo(url: String) -> Result<String, ApiError> {
    let ok = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| url.starts_with(s))
        || (url.starts_with("git@") && url.contains(':'));
    if ok && !url.chars().any(char::is_whitespace) {
        Ok(url)
    } else {
        Err(ApiError::bad_request(format!("invalid repo_url `{url}`"))
            .hint("use an https://, ssh://, git@host:path or file:// URL"))
    }
}

fn validate_branch(branch: String) -> Result<String, ApiError> {
    if branch.is_empty() || branch.starts_with('-') || branch.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::bad_request(format!("invalid branch `{branch}`")));
    }
    Ok(branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_with_control_characters_are_refused() {
        for bad in ["tok\r\nX-Injected: 1", "tok\n", "a\u{0}b", "tab\tbed"] {
            let input = CredentialInput {
                name: "T".into(),
                value: bad.into(),
                hosts: vec!["h.test".into()],
                ..CredentialInput::default()
            };
            assert!(validate_credential(input, None).is_err(), "{bad:?}");
        }
        let ok = CredentialInput {
            name: "T".into(),
            value: "ghp_AbC123-_.~+/=".into(),
            hosts: vec!["h.test".into()],
            ..CredentialInput::default()
        };
        assert!(validate_credential(ok, None).is_ok());
    }

    #[test]
    fn a_credential_keeps_its_stored_points_and_rules_unless_new_ones_are_given() {
        let input = |inject: Option<Vec<&str>>| CredentialInput {
            name: "ANTHROPIC_API_KEY".into(),
            value: "sk-ant-x".into(),
            inject: inject.map(|v| v.into_iter().map(String::from).collect()),
            ..CredentialInput::default()
        };
        let new = validate_credential(input(None), None).unwrap();
        assert_eq!(new.inject, default_injection("ANTHROPIC_API_KEY"));
        assert!(new.rules.is_empty());
        let stored = CredentialInfo {
            name: "ANTHROPIC_API_KEY".into(),
            hosts: vec!["api.anthropic.com".into()],
            fingerprint: "f".into(),
            inject: vec![Injection::Header("x-api-key".into())],
            rules: vec!["POST /v1/messages".parse().unwrap()],
        };
        let kept = validate_credential(input(None), Some(&stored)).unwrap();
        assert_eq!(kept.inject, stored.inject);
        assert_eq!(kept.rules, stored.rules);
        let replaced = validate_credential(input(Some(vec!["authorization", "authorization"])), Some(&stored)).unwrap();
        assert_eq!(replaced.inject, vec![Injection::Authorization]);
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        for good in ["demo", "a", "0-x", "agent-42", &"a".repeat(63)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "Demo",
            "a_b",
            "a b",
            &"a".repeat(64),
            "3a6cdbd2-020f-4850-ba99-f67cd38f62aa",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns_accept_suffixes_and_ports() {
        assert!(validate_hosts(vec!["api.github.com".into(), "*.github.com".into(), "h:8443".into()]).is_ok());
        for bad in ["", "*.", "a b", "h:0", "h:99999", "http://x", ".x"] {
            assert!(validate_hosts(vec![bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn egress_entries_accept_domains_and_cidrs() {
        assert!(
            validate_egress(
                "allow_out",
                vec!["*.pypi.org".into(), "10.0.0.0/8".into(), "1.2.3.4".into()]
            )
            .is_ok()
        );
        assert!(validate_egress("allow_out", vec!["10.0.0.0/33".into()]).is_err());
        assert!(validate_egress("allow_out", vec!["a;b".into()]).is_err());
    }
}
