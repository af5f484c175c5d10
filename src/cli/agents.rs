//! `lap agents list|show|create|edit|delete`.
//!
//! Credential values never travel in argv: `--credential NAME[@host,…]` reads the value from this
//! process's environment variable `NAME`, `--credential-file NAME[@host,…]=PATH` from a file.
//! Where a credential may go is said with `--inject NAME=POINT` and `--rule NAME='METHODS /glob'`
//! (checked here, so a typo is a usage error before anything is sent); given for a name, they
//! replace its set.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};

use super::Ctx;
use crate::error::Error;
use crate::output::Printer;
use crate::tools;
use crate::wire::api::{
    Agent, AgentLimits, AgentVolume, CreateAgent, CredentialInfo, CredentialInput, UpdateAgent, preset_hosts,
};
use crate::wire::vault::{Injection, RequestRule};

/// A volume as `show` prints it: `NAME → PATH (SIZE)`.
fn volume_line(volume: &AgentVolume) -> String {
    let size = volume
        .size_bytes
        .map_or("size unknown".to_owned(), super::snapshots::human_bytes);
    format!("{} → {} ({size})", volume.name, volume.path)
}

/// An agent's limits as `show` prints them.
fn limits(limits: &AgentLimits) -> String {
    let memory = limits.memory_mb.map_or("default".to_owned(), |mb| format!("{mb} MiB"));
    let pids = limits.pids.map_or("default".to_owned(), |n| n.to_string());
    let cpus = limits.cpus.map_or("default".to_owned(), |n| n.to_string());
    format!("memory {memory}, pids {pids}, cpus {cpus}")
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List agents, newest first
    List {
        /// Only agents whose name, id or harness contains this text
        #[arg(long)]
        search: Option<String>,
    },
    /// Show one agent
    Show {
        /// Agent name or id
        name: String,
    },
    /// Create an agent
    Create {
        /// Agent name: 1-63 characters of a-z, 0-9 and `-`
        name: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// Change an agent; flags not given leave their field alone
    Edit {
        /// Agent name or id
        name: String,
        /// Rename the agent
        #[arg(long)]
        rename: Option<String>,
        #[command(flatten)]
        fields: Fields,
        /// Remove a credential (repeatable)
        #[arg(long, value_name = "NAME")]
        remove_credential: Vec<String>,
    },
    /// Delete an agent; its live sessions are stopped first
    Delete {
        /// Agent name or id
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct Fields {
    /// Harness: claude-code, codex, codex-app-server, gemini, hermes, opencode, claude-agent-sdk or shell [create default: opencode]
    #[arg(long, value_parser = harness_ids())]
    harness: Option<String>,
    /// A custom agent command instead of the harness's own ("" clears)
    #[arg(long, value_name = "CMD")]
    command: Option<String>,
    /// Git repository cloned into /work/repo ("" clears)
    #[arg(long, value_name = "URL")]
    repo: Option<String>,
    /// Branch to clone [create default: main]
    #[arg(long, value_name = "B")]
    branch: Option<String>,
    /// System prompt for the agent ("" clears)
    #[arg(long, value_name = "TEXT")]
    prompt: Option<String>,
    /// Model the agent uses ("" clears)
    #[arg(long, value_name = "M")]
    model: Option<String>,
    /// Plain, non-secret environment variable (repeatable; on edit, replaces all)
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Credential whose real value is read from this shell's env var NAME, bound to the hosts (repeatable)
    #[arg(long, value_name = "NAME[@host,host…]")]
    credential: Vec<String>,
    /// Credential whose real value is read from PATH (repeatable)
    #[arg(long, value_name = "NAME[@host,…]=PATH")]
    credential_file: Vec<String>,
    /// Where credential NAME's stub is swapped: authorization, header:NAME, query:NAME or body (repeatable; replaces NAME's set) [default: its preset's]
    #[arg(long, value_name = "NAME=POINT", value_parser = parse_inject)]
    inject: Vec<(String, String)>,
    /// Requests credential NAME may be swapped into, e.g. 'GET,POST /repos/acme/**' (repeatable; replaces NAME's set; NAME= clears) [default: any]
    #[arg(long, value_name = "NAME=RULE", value_parser = parse_rule)]
    rule: Vec<(String, String)>,
    /// Allow egress only to these hosts (repeatable; on edit, replaces the list)
    #[arg(long, value_name = "HOST")]
    allow_out: Vec<String>,
    /// Refuse egress to these hosts (repeatable; on edit, replaces the list)
    #[arg(long, value_name = "HOST")]
    deny_out: Vec<String>,
    /// Memory limit of each sandbox, in MiB (0: the server's default, 4096)
    #[arg(long, value_name = "MIB")]
    memory_mb: Option<u64>,
    /// Process and thread limit of each sandbox (0: the server's default, 1024)
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU limit of each sandbox, in CPUs, fractions allowed (0: the server's default, 2)
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// A directory of the agent mounted at PATH (under /work) in every session, kept between them, e.g. cache:/work/home/.cache (repeatable; on edit, replaces the set and deletes the data of a volume left out; '' removes them all)
    #[arg(long, value_name = "NAME:PATH")]
    volume: Vec<String>,
}

fn harness_ids() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(tools::CATALOG.iter().map(|h| h.id))
}

fn parse_inject(text: &str) -> Result<(String, String), String> {
    let (name, point) = text
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("expected NAME=POINT, got `{text}`"))?;
    let point: Injection = point
        .parse()
        .map_err(|e: crate::wire::vault::InjectionError| format!("{e}; {}", e.hint()))?;
    Ok((name.to_owned(), point.to_string()))
}

/// `NAME=RULE`; `NAME=` (no rule) clears NAME's rules.
fn parse_rule(text: &str) -> Result<(String, String), String> {
    let (name, rule) = text
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("expected NAME='METHODS /glob', got `{text}`"))?;
    if rule.trim().is_empty() {
        return Ok((name.to_owned(), String::new()));
    }
    let rule: RequestRule = rule
        .parse()
        .map_err(|e: crate::wire::vault::RuleError| format!("{e}; {}", e.hint()))?;
    Ok((name.to_owned(), rule.to_string()))
}

/// `NAME=VALUE` pairs grouped by name, in the order given; an empty value only makes the entry.
fn by_name(pairs: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in pairs {
        let entry = map.entry(name.clone()).or_default();
        if !value.is_empty() && !entry.contains(value) {
            entry.push(value.clone());
        }
    }
    map
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected K=V, got `{text}`")),
    }
}

impl Fields {
    /// The `--volume` flags as the API takes them (`None`: none given; `''` alone: none at all).
    fn volumes(&self) -> Result<Option<Vec<AgentVolume>>, Error> {
        if self.volume.is_empty() {
            return Ok(None);
        }
        if self.volume.iter().all(|v| v.is_empty()) {
            return Ok(Some(Vec::new()));
        }
        let parse = |spec: &String| match spec.split_once(':') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(AgentVolume {
                name: name.to_owned(),
                path: path.to_owned(),
                size_bytes: None,
            }),
            _ => Err(Error::usage(
                format!("expected `--volume NAME:PATH`, got `{spec}`"),
                "write e.g. `--volume cache:/work/home/.cache`",
            )),
        };
        self.volume.iter().map(parse).collect::<Result<_, _>>().map(Some)
    }

    /// Whether any limit flag was given.
    fn has_limits(&self) -> bool {
        self.memory_mb.is_some() || self.pids.is_some() || self.cpus.is_some()
    }

    /// `current` with the limit flags given applied; 0 returns a limit to the server's default.
    fn limits(&self, current: AgentLimits) -> AgentLimits {
        fn set<T: PartialEq + Default + Copy>(flag: Option<T>, current: Option<T>) -> Option<T> {
            match flag {
                Some(v) if v == T::default() => None,
                Some(v) => Some(v),
                None => current,
            }
        }
        AgentLimits {
            memory_mb: set(self.memory_mb, current.memory_mb),
            pids: set(self.pids, current.pids),
            cpus: set(self.cpus, current.cpus),
        }
    }

    /// The credentials to send, each bound to hosts: the ones given, else its name's preset (said on
    /// stderr), else a usage error — before any value is read.
    fn credentials(&self, out: &Printer) -> Result<Vec<CredentialInput>, Error> {
        // (NAME[@hosts], None) for `--credential`, (NAME[@hosts], Some((spec, PATH))) for `--credential-file`.
        let from_env = self.credential.iter().map(|spec| (spec.as_str(), None));
        let from_file = self.credential_file.iter().map(|spec| {
            let (binding, path) = spec.split_once('=').unwrap_or((spec.as_str(), ""));
            (binding, Some((spec.as_str(), path)))
        });
        let specs: Vec<_> = from_env.chain(from_file).collect();
        let mut bound = Vec::new();
        for (binding, file) in specs {
            let (name, mut hosts) = split_binding(binding);
            if hosts.is_empty() {
                hosts = preset_hosts(&name).ok_or_else(|| {
                    Error::usage(
                        format!("credential `{name}` is bound to no host; it would never be sent anywhere"),
                        format!("name the hosts it may be sent to: `{name}@api.example.com,…`"),
                    )
                })?;
                out.status(format!("binding `{name}` to its preset hosts: {}", hosts.join(", ")));
            }
            bound.push((name, hosts, binding, file));
        }
        let mut result = Vec::new();
        for (name, hosts, binding, file) in bound {
            let value = match file {
                None => std::env::var(&name).map_err(|_| {
                    Error::usage(
                        format!("`--credential {binding}` reads the value from the environment variable `{name}`, which is not set"),
                        format!("export {name}=… first, or use `--credential-file {name}=PATH`"),
                    )
                })?,
                Some((spec, path)) => {
                    if path.is_empty() {
                        return Err(Error::usage(format!("`--credential-file {spec}` has no `=PATH`"), "write NAME[@hosts]=PATH"));
                    }
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| Error::io(format!("cannot read credential `{name}` from `{path}`"), e))?;
                    text.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            result.push(CredentialInput {
                name,
                value,
                hosts,
                ..CredentialInput::default()
            });
        }
        Ok(result)
    }
}

fn split_binding(spec: &str) -> (String, Vec<String>) {
    match spec.split_once('@') {
        Some((name, hosts)) => (
            name.to_owned(),
            hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect(),
        ),
        None => (spec.to_owned(), Vec::new()),
    }
}

pub async fn run(command: Command, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        Command::List { search } => {
            let agents = client.list_agents(search.as_deref()).await?;
            if ctx.out.json {
                ctx.out.json(&agents);
            } else if agents.is_empty() {
                ctx.out
                    .status("no agents yet; create one with `lap agents create NAME --harness shell`");
            } else {
                let rows: Vec<Vec<String>> = agents
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            a.harness_id.clone(),
                            a.session_count.unwrap_or(0).to_string(),
                            a.repo_url.clone().unwrap_or_else(|| "-".into()),
                            a.created_at.clone(),
                        ]
                    })
                    .collect();
                ctx.out
                    .table(&["NAME", "HARNESS", "SESSIONS", "REPO", "CREATED"], &rows);
            }
        }
        Command::Show { name } => print_agent(ctx, &client.get_agent(&name).await?),
        Command::Create { name, fields } => {
            let body = CreateAgent {
                volumes: fields.volumes()?.unwrap_or_default(),
                limits: fields.limits(AgentLimits::default()),
                credentials: fields.credentials(&ctx.out)?,
                name,
                harness_id: fields.harness,
                command: fields.command,
                repo_url: fields.repo,
                branch: fields.branch,
                prompt: fields.prompt,
                model: fields.model,
                env: fields.env.into_iter().collect(),
                env_vars: BTreeMap::new(),
                env_var_hosts: BTreeMap::new(),
                env_var_inject: by_name(&fields.inject),
                env_var_rules: by_name(&fields.rule),
                allow_out: fields.allow_out,
                deny_out: fields.deny_out,
            };
            let agent = client.create_agent(&body).await?;
            ctx.out.status(format!("created agent `{}`", agent.name));
            print_agent(ctx, &agent);
        }
        Command::Edit {
            name,
            rename,
            fields,
            remove_credential,
        } => {
            // Limits not given stay as they are: the body replaces all three.
            let limits = if fields.has_limits() {
                Some(fields.limits(client.get_agent(&name).await?.limits))
            } else {
                None
            };
            let body = UpdateAgent {
                volumes: fields.volumes()?,
                limits,
                credentials: fields.credentials(&ctx.out)?,
                name: rename,
                harness_id: fields.harness,
                command: fields.command,
                repo_url: fields.repo,
                branch: fields.branch,
                prompt: fields.prompt,
                model: fields.model,
                env: (!fields.env.is_empty()).then(|| fields.env.into_iter().collect()),
                env_vars: BTreeMap::new(),
                env_var_hosts: BTreeMap::new(),
                env_var_inject: by_name(&fields.inject),
                env_var_rules: by_name(&fields.rule),
                remove_credentials: remove_credential,
                allow_out: (!fields.allow_out.is_empty()).then_some(fields.allow_out),
                deny_out: (!fields.deny_out.is_empty()).then_some(fields.deny_out),
            };
            let agent = client.update_agent(&name, &body).await?;
            ctx.out.status(format!("updated agent `{}`", agent.name));
            print_agent(ctx, &agent);
        }
        Command::Delete { name } => {
            client.delete_agent(&name).await?;
            if ctx.out.json {
                ctx.out.json(&serde_json::json!({ "deleted": name }));
            }
            ctx.out.status(format!("deleted agent `{name}`"));
        }
    }
    Ok(())
}

/// `NAME → hosts; inject POINTS[; rules RULES] (fingerprint FP)`.
fn credential_line(c: &CredentialInfo) -> String {
    let hosts = if c.hosts.is_empty() {
        "no hosts bound".to_owned()
    } else {
        c.hosts.join(", ")
    };
    let join = |items: Vec<String>| items.join(", ");
    let inject = if c.inject.is_empty() {
        "nowhere".to_owned()
    } else {
        join(c.inject.iter().map(ToString::to_string).collect())
    };
    let rules = if c.rules.is_empty() {
        String::new()
    } else {
        format!("; rules {}", join(c.rules.iter().map(ToString::to_string).collect()))
    };
    format!(
        "{} → {hosts}; inject {inject}{rules} (fingerprint {})",
        c.name, c.fingerprint
    )
}

fn print_agent(ctx: &Ctx, agent: &Agent) {
    if ctx.out.json {
        ctx.out.json(agent);
        return;
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    let env: Vec<String> = agent.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let creds: Vec<String> = agent.credentials.iter().map(credential_line).collect();
    let rows = [
        ("name", agent.name.clone()),
        ("id", agent.id.to_string()),
        ("harness", agent.harness_id.clone()),
        ("command", dash(&agent.command)),
        ("repo", dash(&agent.repo_url)),
        ("branch", agent.branch.clone()),
        ("prompt", dash(&agent.prompt)),
        ("model", dash(&agent.model)),
        ("env", list(&env)),
        // One credential a line, under each other.
        (
            "credentials",
            if creds.is_empty() {
                "-".to_owned()
            } else {
                creds.join(&format!("\n{:13}", ""))
            },
        ),
        ("allow_out", list(&agent.allow_out)),
        ("deny_out", list(&agent.deny_out)),
        ("limits", limits(&agent.limits)),
        // One volume a line: NAME → PATH (size).
        (
            "volumes",
            if agent.volumes.is_empty() {
                "-".to_owned()
            } else {
                agent
                    .volumes
                    .iter()
                    .map(volume_line)
                    .collect::<Vec<_>>()
                    .join(&format!("\n{:13}", ""))
            },
        ),
        ("created", agent.created_at.clone()),
    ];
    for (key, value) in rows {
        ctx.out.line(format!("{key:<12} {value}"));
    }
}
