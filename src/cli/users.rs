//! `lap users create|list|disable|enable|quota` and `lap keys create|list|revoke` (admin only): the people
//! of a team, and the API keys they sign in with (`lap login` takes one like the master key).

use clap::Subcommand;

use super::Ctx;
use crate::error::Error;
use crate::wire::teams::{ApiKey, NewApiKey, NewUser, Quota, Role, User, UserPatch};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user (then give them a key: `lap keys create --user NAME --role member`)
    Create {
        /// Letters, digits, `.`, `_`, `-` and `@`; unique
        name: String,
    },
    /// List users
    List,
    /// Refuse every key of a user at once
    Disable {
        /// User name
        name: String,
    },
    /// Let a disabled user's keys in again
    Enable {
        /// User name
        name: String,
    },
    /// Set what a user's sessions may hold at once; a limit left out is lifted (over it, a new
    /// session is refused with 429)
    Quota {
        /// User name
        name: String,
        /// Live sessions
        #[arg(long)]
        sessions: Option<u32>,
        /// Memory of their sandboxes together, in MiB (an agent without a limit counts 4096)
        #[arg(long)]
        memory_mb: Option<u64>,
        /// CPUs of their sandboxes together (an agent without a limit counts 2)
        #[arg(long)]
        cpus: Option<f64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make an API key acting as a user; it is printed once, on stdout
    Create {
        /// The user it acts as
        #[arg(long)]
        user: String,
        /// viewer (reads), member (also drives sessions) or admin (everything)
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Refused after this long (`30d`, `12h`, `90m`) [default: never]
        #[arg(long, value_parser = parse_expiry)]
        expires: Option<u64>,
    },
    /// List API keys (their first characters, never the keys)
    List {
        /// Only this user's keys
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API key: refused from its next request on
    Revoke {
        /// Key id (from `lap keys list`)
        id: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("`{text}` is not a role: viewer, member or admin"))
}

/// Seconds from a duration such as `30d`.
fn parse_expiry(text: &str) -> Result<u64, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration ({e}); e.g. `30d`, `12h`"))?;
    match duration.as_secs() {
        0 => Err("a key must last at least a second".to_owned()),
        seconds => Ok(seconds),
    }
}

pub async fn run_users(command: UsersCommand, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    let user = match command {
        UsersCommand::Create { name } => {
            let user = client.create_user(&NewUser { name }).await?;
            ctx.out.status(format!(
                "user `{}` created; give them a key: `lap keys create --user {} --role member`",
                user.name, user.name
            ));
            user
        }
        UsersCommand::List => {
            let users = client.list_users().await?;
            if ctx.out.json {
                ctx.out.json(&users);
            } else if users.is_empty() {
                ctx.out.status("no users yet; add one with `lap users create NAME`");
            } else {
                let rows: Vec<Vec<String>> = users.iter().map(user_row).collect();
                ctx.out.table(&["NAME", "STATUS", "QUOTA", "CREATED", "ID"], &rows);
            }
            return Ok(());
        }
        UsersCommand::Disable { name } => {
            let user = client.update_user(&name, &UserPatch { disabled: true }).await?;
            ctx.out
                .status(format!("user `{name}` disabled: their keys are refused"));
            user
        }
        UsersCommand::Enable { name } => {
            let user = client.update_user(&name, &UserPatch { disabled: false }).await?;
            ctx.out.status(format!("user `{name}` enabled"));
            user
        }
        UsersCommand::Quota {
            name,
            sessions,
            memory_mb,
            cpus,
        } => {
            let quota = Quota {
                sessions,
                memory_mb,
                cpus,
            };
            let user = client.set_quota(&name, &quota).await?;
            ctx.out
                .status(format!("quota of `{name}`: {}", quota_text(&user.quota)));
            user
        }
    };
    if ctx.out.json {
        ctx.out.json(&user);
    }
    Ok(())
}

pub async fn run_keys(command: KeysCommand, ctx: &Ctx) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        KeysCommand::Create { user, role, expires } => {
            let created = client
                .create_key(&NewApiKey {
                    user,
                    role,
                    expires_in_seconds: expires,
                })
                .await?;
            if ctx.out.json {
                ctx.out.json(&created);
            } else {
                ctx.out.status(format!(
                    "API key {} for `{}` ({}){}; it is shown this once: `lap login --key-stdin` takes it",
                    created.info.id,
                    created.info.user,
                    created.info.role,
                    created
                        .info
                        .expires_at
                        .as_ref()
                        .map(|at| format!(", expires {at}"))
                        .unwrap_or_default()
                ));
                ctx.out.line(&created.key);
            }
        }
        KeysCommand::List { user } => {
            let keys = client.list_keys(user.as_deref()).await?;
            if ctx.out.json {
                ctx.out.json(&keys);
            } else if keys.is_empty() {
                ctx.out
                    .status("no API keys yet; make one with `lap keys create --user NAME --role member`");
            } else {
                let rows: Vec<Vec<String>> = keys.iter().map(key_row).collect();
                ctx.out
                    .table(&["ID", "USER", "ROLE", "KEY", "STATUS", "CREATED"], &rows);
            }
        }
        KeysCommand::Revoke { id } => {
            let key = client.revoke_key(&id).await?;
            if ctx.out.json {
                ctx.out.json(&key);
            } else {
                ctx.out.status(format!("API key {} of `{}` revoked", key.id, key.user));
            }
        }
    }
    Ok(())
}

fn user_row(user: &User) -> Vec<String> {
    vec![
        user.name.clone(),
        if user.disabled { "disabled" } else { "active" }.to_owned(),
        quota_text(&user.quota),
        user.created_at.clone(),
        user.id.to_string(),
    ]
}

fn key_row(key: &ApiKey) -> Vec<String> {
    let status = match (&key.revoked_at, &key.expires_at) {
        (Some(at), _) => format!("revoked {at}"),
        (None, Some(at)) => format!("expires {at}"),
        (None, None) => "active".to_owned(),
    };
    vec![
        key.id.to_string(),
        key.user.clone(),
        key.role.to_string(),
        format!("{}…", key.prefix),
        status,
        key.created_at.clone(),
    ]
}

/// A quota for people: `2 sessions, 8192 MiB, 4 CPUs`, or `none`.
fn quota_text(quota: &Quota) -> String {
    let parts: Vec<String> = [
        quota.sessions.map(|n| format!("{n} sessions")),
        quota.memory_mb.map(|mb| format!("{mb} MiB")),
        quota.cpus.map(|cpus| format!("{cpus} CPUs")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}
