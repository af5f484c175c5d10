//! Agent volumes with real sandboxes on the local backend: what one session writes into a volume the
//! next session of the same agent finds, sessions at once share it (each writing what the others
//! made, though each runs as a uid of its own), another agent never sees it, an
//! edit that drops a volume and the agent's deletion free its directory, and bad volumes are refused
//! with a hint before anything is stored. The server runs its default warm pool, so a session that
//! took a warm sandbox (which mounts no volume) would be seen here.

use std::path::PathBuf;

use crate::support;
use crate::support::{Home, Run, TestServer, lap};

/// A local server; its sandboxes are deleted on drop, even after a failure half-way.
struct Fixture {
    home: Home,
    server: TestServer,
}

impl Fixture {
    fn new() -> Self {
        let home = Home::new();
        let server = TestServer::start_local_with(&home, std::iter::empty::<&str>());
        Self { home, server }
    }

    fn lap<const N: usize>(&self, args: [&str; N]) -> Run {
        lap(&self.home, args)
    }

    fn agent(&self, name: &str, volume: &str) {
        self.lap(["agents", "create", name, "--harness", "shell", "--volume", volume])
            .success();
    }

    fn session(&self, agent: &str) -> String {
        self.lap(["sessions", "create", agent])
            .success()
            .out()
            .trim()
            .to_owned()
    }

    /// Runs `sh -c SCRIPT` in session `id` and returns its stdout.
    fn sh(&self, id: &str, script: &str) -> String {
        self.lap(["exec", id, "--", "sh", "-c", script]).success().stdout
    }

    fn show(&self, agent: &str) -> serde_json::Value {
        self.lap(["agents", "show", agent, "--json"]).success().json()
    }

    /// The host directory of volume `volume` of agent `agent`.
    fn volume_dir(&self, agent: &str, volume: &str) -> PathBuf {
        let id = self.show(agent)["id"].as_str().expect("an agent id").to_owned();
        self.server.data_dir().join("volumes").join(id).join(volume)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.kill9();
        support::delete_local_sandboxes(self.server.data_dir());
    }
}

#[track_caller]
fn refused(run: &Run, message: &str) {
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains(message), "expected {message:?}: {run}");
    assert!(run.stderr.contains("hint:"), "no hint: {run}");
}

#[test]
fn a_volume_is_shared_by_the_sessions_of_its_agent_and_no_other_agent() {
    let f = Fixture::new();
    f.agent("npm", "cache:/work/home/.cache");
    f.agent("other", "cache:/work/home/.cache");

    let first = f.session("npm");
    f.sh(
        &first,
        "mkdir -p ~/.cache/pkg && echo installed > ~/.cache/pkg/index.js",
    );
    let dir = f.volume_dir("npm", "cache");
    assert_eq!(
        std::fs::read_to_string(dir.join("pkg/index.js")).unwrap(),
        "installed\n",
        "the volume lives under <data>/volumes/<agent id>/<name>"
    );

    // A second session while the first runs: it finds the file, and the first sees its writes.
    let second = f.session("npm");
    assert_eq!(f.sh(&second, "cat /work/home/.cache/pkg/index.js"), "installed\n");
    f.sh(&second, "echo from-second > ~/.cache/second.txt");
    assert_eq!(f.sh(&first, "cat ~/.cache/second.txt"), "from-second\n");

    // A later session, once both are gone, finds both files and can write.
    f.lap(["sessions", "delete", &first]).success();
    f.lap(["sessions", "delete", &second]).success();
    let third = f.session("npm");
    assert_eq!(
        f.sh(
            &third,
            "cat ~/.cache/pkg/index.js ~/.cache/second.txt && echo more > ~/.cache/third.txt && ls ~/.cache"
        ),
        "installed\nfrom-second\npkg\nsecond.txt\nthird.txt\n"
    );

    // Another agent with a volume of the same name and path has its own, empty one.
    let stranger = f.session("other");
    assert_eq!(f.sh(&stranger, "ls -A /work/home/.cache | wc -l"), "0\n");

    // `agents show` lists the volume with its size.
    let shown = f.lap(["agents", "show", "npm"]).success().stdout;
    let line = shown
        .lines()
        .find(|l| l.starts_with("volumes"))
        .expect("a volumes line");
    assert!(line.contains("cache → /work/home/.cache ("), "{shown}");
    assert!(!line.contains("(0 B)") && !line.contains("unknown"), "{shown}");
    let size = f.show("npm")["volumes"][0]["size_bytes"].as_u64().expect("a size");
    assert_eq!(
        size,
        ("installed\n".len() + "from-second\n".len() + "more\n".len()) as u64
    );

    // Deleting the agent deletes its volumes, and only its own.
    let other_dir = f.volume_dir("other", "cache");
    assert!(other_dir.is_dir());
    f.lap(["agents", "delete", "npm"]).success();
    assert!(!dir.exists(), "the agent's volume is deleted with it");
    assert!(!dir.parent().unwrap().exists(), "and its volumes directory");
    assert!(other_dir.is_dir(), "another agent's volume stays");
}

#[test]
fn sessions_running_at_once_each_change_what_the_other_made() {
    let f = Fixture::new();
    f.agent("npm", "cache:/work/home/.cache");
    let first = f.session("npm");
    f.sh(&first, "mkdir -p ~/.cache/a && echo one > ~/.cache/a/log");

    // As root each sandbox runs as a uid of its own; all of them write everything in the volume,
    // and the first keeps doing so after the second started.
    let second = f.session("npm");
    f.sh(
        &second,
        "echo two >> ~/.cache/a/log && mkdir ~/.cache/b && echo made > ~/.cache/b/file",
    );
    f.sh(
        &first,
        "echo three >> ~/.cache/a/log && echo changed > ~/.cache/b/file && mkdir ~/.cache/b/deeper && rm ~/.cache/a/log",
    );
    f.sh(&second, "echo four > ~/.cache/a/log && rmdir ~/.cache/b/deeper");
    assert_eq!(
        f.sh(&first, "cat ~/.cache/a/log ~/.cache/b/file; ls -A ~/.cache/b"),
        "four\nchanged\nfile\n"
    );
    for id in [&first, &second] {
        let ids = f.sh(id, "id -u; stat -c %u ~/.cache/a/log; stat -c %u ~/.cache/b");
        let ids: Vec<&str> = ids.lines().collect();
        assert!(
            ids.len() == 3 && ids[1] == ids[0] && ids[2] == ids[0],
            "each session owns the files: {ids:?}"
        );
    }

    // On the host everything in it has one owner, whichever session wrote it.
    let dir = f.volume_dir("npm", "cache");
    let owners: std::collections::BTreeSet<u32> = ["", "a", "a/log", "b", "b/file"]
        .iter()
        .map(|p| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.join(p)).expect("a volume file")))
        .collect();
    assert_eq!(owners.len(), 1, "one owner on the host, got {owners:?}");
}

#[test]
fn an_edit_that_drops_a_volume_deletes_its_data_and_one_kept_by_name_moves_with_its_path() {
    let f = Fixture::new();
    f.agent("tools", "cache:/work/home/.cache");
    f.lap([
        "agents",
        "edit",
        "tools",
        "--volume",
        "cache:/work/home/.cache",
        "--volume",
        "npm:/work/home/.npm",
    ])
    .success();
    let id = f.session("tools");
    f.sh(&id, "echo a > ~/.cache/a && echo b > ~/.npm/b");
    f.lap(["sessions", "delete", &id]).success();
    let (cache, npm) = (f.volume_dir("tools", "cache"), f.volume_dir("tools", "npm"));
    assert!(cache.join("a").is_file() && npm.join("b").is_file());

    f.lap(["agents", "edit", "tools", "--volume", "cache:/work/cache"])
        .success();
    assert!(!npm.exists(), "the dropped volume's data is deleted");
    let id = f.session("tools");
    assert_eq!(f.sh(&id, "cat /work/cache/a; ls -A ~ | grep -c npm || true"), "a\n0\n");

    f.lap(["agents", "edit", "tools", "--volume", ""]).success();
    assert!(!cache.exists(), "`--volume ''` removes them all");
    assert!(f.show("tools").get("volumes").is_none());
}

#[test]
fn bad_volumes_are_refused_with_a_hint_and_nothing_is_stored() {
    let f = Fixture::new();
    for (volume, message) in [
        ("v:/usr/lib", "cannot be mounted at `/usr/lib`"),
        ("v:/work/home/../../etc", "`.` or `..`"),
        ("v:/work", "hide the whole workspace"),
        ("v:/work/home", "hide the whole workspace"),
        ("v:/work/repo/node_modules", "the repository is cloned there"),
        ("v:home/.cache", "not absolute"),
        ("V:/work/x", "invalid volume name `V`"),
        ("no-path", "expected `--volume NAME:PATH`"),
    ] {
        let run = f.lap(["agents", "create", "bad", "--harness", "shell", "--volume", volume]);
        refused(&run, message);
    }
    let twice = f.lap([
        "agents",
        "create",
        "bad",
        "--harness",
        "shell",
        "--volume",
        "v:/work/a",
        "--volume",
        "v:/work/b",
    ]);
    refused(&twice, "volume `v` is given twice");
    let nested = f.lap([
        "agents",
        "create",
        "bad",
        "--harness",
        "shell",
        "--volume",
        "a:/work/a",
        "--volume",
        "b:/work/a/b",
    ]);
    refused(&nested, "overlaps");
    assert_ne!(f.lap(["agents", "show", "bad"]).code, 0, "no agent was stored");

    // The same checks on edit leave the agent as it was.
    f.agent("good", "cache:/work/home/.cache");
    refused(
        &f.lap(["agents", "edit", "good", "--volume", "cache:/etc"]),
        "cannot be mounted",
    );
    assert_eq!(f.show("good")["volumes"][0]["path"], "/work/home/.cache");
}

#[test]
fn a_symlink_where_a_volume_mounts_fails_the_session_instead_of_being_followed() {
    let f = Fixture::new();
    f.agent("links", "cache:/work/home/.cache");
    let id = f.session("links");
    // The agent swaps its mount point for a link out of /work; the next sandbox must not follow it.
    f.sh(&id, "umount ~/.cache 2>/dev/null; true");
    let workspace = PathBuf::from(
        f.lap(["sessions", "show", &id, "--json"]).success().json()["workspace"]["path"]
            .as_str()
            .expect("a workspace path"),
    );
    f.lap(["sessions", "hibernate", &id]).success();
    let point = workspace.join("home/.cache");
    std::fs::remove_dir(&point).expect("the empty mount point");
    std::os::unix::fs::symlink("/etc", &point).unwrap();
    let run = f.lap(["exec", &id, "--", "true"]);
    assert_ne!(run.code, 0, "{run}");
    let shown = f.lap(["sessions", "show", &id, "--json"]).success().stdout;
    assert!(
        shown.contains("`/work/home/.cache` is not a directory") || run.stderr.contains("is not a directory"),
        "{run}\n{shown}\nserver log:\n{}",
        f.server.log()
    );
}
