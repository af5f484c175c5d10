//! The sandbox's git configuration: every git host a credential is bound to is reached over HTTPS,
//! through the vault, with the credential's stub.
//!
//! A sandbox holds no SSH key, and the vault cannot see into SSH, so an SSH remote
//! (`git@github.com:org/repo`, `ssh://git@github.com/org/repo`) for a bound host would fail — or
//! tempt an agent to go looking for a key. The sandbox's environment therefore carries git
//! configuration (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`, read by every git the
//! agent or lap runs, clone included) that, for each bound host:
//! - rewrites the SSH remote forms to `https://HOST/` (`url.<base>.insteadOf`, which holds for fetch
//!   and push alike), and
//! - answers git's credential request for HOST (any port) with the credential's stub, from the
//!   sandbox's environment at the moment git asks (a `credential.helper` that answers for the
//!   credential's own hosts only), so `git push` sends `Authorization: Basic base64(user:stub)`,
//!   which the vault swaps toward that host only.
//!
//! Invariant: only stubs are ever named here (by environment variable, never by value), so nothing
//! in this configuration is secret; a name that is not a plain environment variable name, or a host
//! with characters a host name cannot have, gets no entry (nothing reaches the helper's shell
//! unchecked). A wildcard host (`*.suffix`) gets the helper but no rewrite: `insteadOf` matches
//! prefixes, which cannot express it.

/// The SSH remote forms rewritten to HTTPS, `{}` standing for the host.
const SSH_FORMS: &[&str] = &["git@{}:", "ssh://git@{}/", "ssh://{}/", "git+ssh://git@{}/"];

/// The user name git sends with a credential's stub, per well-known credential (the host checks
/// only the token; GitLab wants `oauth2` for OAuth tokens and accepts it for personal ones).
fn user_for(name: &str) -> &'static str {
    match name {
        "GITLAB_TOKEN" => "oauth2",
        _ => "x-access-token",
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A bound host pattern as it may appear in git's URLs: lower-case, no trailing dot, `*.suffix` kept
/// (the credential helper matches it as a shell pattern); `None` for a pattern with characters a host
/// name cannot have. A `:port` is kept.
fn git_host(pattern: &str) -> Option<String> {
    let host = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host.as_str(), None),
    };
    let bare = name.strip_prefix("*.").unwrap_or(name);
    let name_ok = !bare.is_empty()
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    (name_ok && port_ok).then_some(host)
}

/// The `case` pattern of a host in the credential helper: without a port, any port.
fn case_pattern(host: &str) -> String {
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}|{host}:*")
    }
}

/// The git configuration, as `(key, value)` pairs in order, for credentials given as
/// `(environment variable name, bound hosts)`.
pub fn config(credentials: &[(String, Vec<String>)]) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut rewritten: Vec<String> = Vec::new();
    for (name, hosts) in credentials {
        if !is_env_name(name) {
            continue;
        }
        let hosts: Vec<String> = hosts.iter().filter_map(|h| git_host(h)).collect();
        if hosts.is_empty() {
            continue;
        }
        for host in hosts.iter().filter(|h| !h.starts_with("*.")) {
            // The SSH forms name the host without a port: an SSH port is not the HTTPS one.
            let bare = host.split(':').next().unwrap_or(host).to_owned();
            if rewritten.contains(&bare) {
                continue;
            }
            let base = format!("https://{bare}/");
            for form in SSH_FORMS {
                entries.push((format!("url.{base}.insteadOf"), form.replace("{}", &bare)));
            }
            rewritten.push(bare);
        }
        // One helper per credential, answering `get` for its own hosts only (git passes the host,
        // with a port when the URL has one, on the helper's stdin). A helper keyed by URL
        // (`credential.<url>.helper`) would miss every non-default port.
        let patterns: Vec<String> = hosts.iter().map(|h| case_pattern(h)).collect();
        let user = user_for(name);
        let helper = format!(
            "!f() {{ test \"$1\" = get || exit 0; h=; while IFS== read -r k v; do test \"$k\" = host && h=$v; done; \
             case \"$h\" in {}) ;; *) exit 0 ;; esac; test -n \"${name}\" || exit 0; \
             echo username={user}; echo \"password=${name}\"; }}; f",
            patterns.join("|")
        );
        entries.push(("credential.helper".to_owned(), helper));
    }
    entries
}

/// [`config`] as the environment variables git reads it from.
pub fn config_env(credentials: &[(String, Vec<String>)]) -> Vec<(String, String)> {
    let entries = config(credentials);
    let mut env = vec![("GIT_CONFIG_COUNT".to_owned(), entries.len().to_string())];
    for (i, (key, value)) in entries.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), key));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(n, h)| ((*n).to_owned(), h.iter().map(|h| (*h).to_owned()).collect()))
            .collect()
    }

    /// Runs a helper as git would (`sh -c`, the `get` action, the request on stdin) with `env`.
    fn ask(helper: &str, host: &str, env: &[(&str, &str)]) -> String {
        use std::io::Write;
        let script = helper.strip_prefix('!').unwrap();
        let mut child = std::process::Command::new("sh")
            .args(["-c", &format!("{script} \"$@\""), "helper", "get"])
            .env_clear()
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let request = format!("protocol=https\nhost={host}\n\n");
        child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    }

    #[test]
    fn every_bound_host_gets_its_ssh_forms_rewritten() {
        let config = config(&creds(&[
            (
                "GITHUB_TOKEN",
                &["github.com", "api.github.com", "*.githubusercontent.com"],
            ),
            ("GH_TOKEN", &["GitHub.com."]),
            ("GITLAB_TOKEN", &["gitlab.com"]),
            ("FORGE_TOKEN", &["git.corp.test:8443"]),
        ]));
        let has = |k: &str, v: &str| config.iter().any(|(key, value)| key == k && value == v);
        assert!(has("url.https://github.com/.insteadOf", "git@github.com:"));
        assert!(has("url.https://github.com/.insteadOf", "ssh://git@github.com/"));
        assert!(has("url.https://gitlab.com/.insteadOf", "git@gitlab.com:"));
        assert!(has("url.https://git.corp.test/.insteadOf", "git@git.corp.test:"));
        // One rewrite per host, however many credentials are bound to it; none for a wildcard.
        let github_rewrites = config
            .iter()
            .filter(|(k, _)| k == "url.https://github.com/.insteadOf")
            .count();
        assert_eq!(github_rewrites, SSH_FORMS.len());
        assert!(config.iter().all(|(k, _)| !k.contains('*')));
        assert_eq!(config.iter().filter(|(k, _)| k == "credential.helper").count(), 4);
    }

    #[test]
    fn each_helper_answers_with_its_own_stub_for_its_own_hosts_only() {
        let config = config(&creds(&[
            ("GITHUB_TOKEN", &["github.com", "*.githubusercontent.com"]),
            ("GITLAB_TOKEN", &["gitlab.com"]),
            ("FORGE_TOKEN", &["git.corp.test:8443"]),
        ]));
        let helpers: Vec<&str> = config
            .iter()
            .filter(|(k, _)| k == "credential.helper")
            .map(|(_, v)| v.as_str())
            .collect();
        let env = [
            ("GITHUB_TOKEN", "stub_gh"),
            ("GITLAB_TOKEN", "stub_gl"),
            ("FORGE_TOKEN", "stub_forge"),
        ];
        let github = "username=x-access-token\npassword=stub_gh\n";
        assert_eq!(ask(helpers[0], "github.com", &env), github);
        assert_eq!(ask(helpers[0], "github.com:8080", &env), github);
        assert_eq!(ask(helpers[0], "raw.githubusercontent.com", &env), github);
        assert_eq!(ask(helpers[0], "gitlab.com", &env), "");
        assert_eq!(ask(helpers[0], "evil.test", &env), "");
        assert_eq!(
            ask(helpers[1], "gitlab.com", &env),
            "username=oauth2\npassword=stub_gl\n"
        );
        assert_eq!(
            ask(helpers[2], "git.corp.test:8443", &env),
            "username=x-access-token\npassword=stub_forge\n"
        );
        assert_eq!(ask(helpers[2], "git.corp.test", &env), "");
        // No stub in the environment (the agent unset it): no answer, git asks no one else for it.
        assert_eq!(ask(helpers[0], "github.com", &[]), "");
    }

    #[test]
    fn names_and_hosts_that_could_inject_shell_or_config_get_nothing() {
        let config = config(&creds(&[
            ("X;rm -rf /", &["github.com"]),
            ("GOOD", &["evil.test/ x", "a b", "$(id)", "h:notaport", "*.;x"]),
        ]));
        assert!(config.is_empty(), "{config:?}");
    }

    #[test]
    fn the_environment_form_counts_its_entries() {
        let env = config_env(&creds(&[("GITHUB_TOKEN", &["github.com"])]));
        let count: usize = env[0].1.parse().unwrap();
        assert_eq!(env[0].0, "GIT_CONFIG_COUNT");
        assert_eq!(count, SSH_FORMS.len() + 1);
        assert_eq!(env.len(), 1 + 2 * count);
        assert_eq!(env[1].0, "GIT_CONFIG_KEY_0");
    }
}
