//! Files in and out of real sandboxes (`lap serve --backend local`): `lap cp`, `lap ls` and the
//! REST routes under `…/sessions/{id}/files`.
//!
//! What is proven: a 1 GiB file goes in and out with the same SHA-256 while `lap serve`'s peak
//! resident memory grows by less than [`MAX_RSS_GROWTH`]; directories travel as tar with modes kept;
//! `Range` is honoured (206, 416); an upload over the limit is a 413 with a hint; a dead or unknown
//! session is a 4xx with a hint. And, from a hostile agent's side: `..`, paths outside `/work` and
//! `/tmp`, symlinks that lead out (also one swapped in and out while downloads run), tar entries
//! that climb out or write through a link, and writes the sandbox user may not make are all refused.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{Home, TestServer, lap};

/// How long a session may take to become ready.
const READY_WAIT: Duration = Duration::from_secs(30);
/// The big transfer's size.
const BIG: u64 = 1 << 30;
/// How much `lap serve`'s peak resident memory may grow while the big file goes in and out.
const MAX_RSS_GROWTH: u64 = 200 * 1024 * 1024;

/// A local server with a shell agent and one ready session; sandboxes are deleted on drop.
struct Fixture {
    home: Home,
    server: TestServer,
    session: String,
}

impl Fixture {
    fn new(extra_args: &[&str]) -> Self {
        let home = Home::new();
        let server = TestServer::start_local_with(&home, extra_args.iter().copied());
        lap(&home, ["agents", "create", "box", "--harness", "shell"]).success();
        let session = ready_session(&home, "box");
        Self { home, server, session }
    }

    /// Runs a shell script in the sandbox as the sandbox user; returns its stdout.
    fn sh(&self, script: &str) -> String {
        lap(&self.home, ["exec", &self.session, "--", "sh", "-c", script])
            .success()
            .stdout
    }

    fn url(&self, tail: &str) -> String {
        format!(
            "{}/api/v1/managed_agents/sessions/{}/files{tail}",
            self.server.url, self.session
        )
    }

    fn key(&self) -> String {
        self.server.master_key()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        support::delete_local_sandboxes(self.server.data_dir());
    }
}

fn ready_session(home: &Home, agent: &str) -> String {
    let session = lap(home, ["--json", "sessions", "create", agent]).success().json();
    let id = session["id"].as_str().unwrap().to_owned();
    support::wait_until(&format!("session {id} ready"), READY_WAIT, || {
        let shown = lap(home, ["--json", "sessions", "show", &id]).success().json();
        match shown["status"].as_str() {
            Some("ready") => Ok(()),
            Some("creating") => Err(shown),
            other => panic!("session {id} is {other:?}: {shown}"),
        }
    });
    id
}

/// A blocking HTTP client for the routes' status codes and headers.
struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    key: String,
}

/// What a request answered.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

impl Http {
    fn new(key: String) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            key,
        }
    }

    fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.runtime.block_on(async {
            let resp = request.bearer_auth(&self.key).send().await.expect("request sent");
            Answer {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body: resp.bytes().await.expect("body").to_vec(),
            }
        })
    }

    fn get(&self, url: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> Answer {
        let mut request = self.client.get(with_query(url, query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    fn put(&self, url: &str, query: &[(&str, &str)], body: Vec<u8>) -> Answer {
        self.send(self.client.put(with_query(url, query)).body(body))
    }

    /// A PUT whose body is streamed in chunks, with no `Content-Length`.
    fn put_chunked(&self, url: &str, query: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(8192).map(|c| Ok(c.to_vec())).collect();
        let stream = futures_util::stream::iter(chunks);
        self.send(
            self.client
                .put(with_query(url, query))
                .body(reqwest::Body::wrap_stream(stream)),
        )
    }

    fn delete(&self, url: &str, query: &[(&str, &str)]) -> Answer {
        self.send(self.client.delete(with_query(url, query)))
    }
}

/// `url?k=v&…`, values percent-encoded.
fn with_query(url: &str, query: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
    format!("{url}?{}", pairs.join("&"))
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        context.update(&buf[..n]);
    }
    context.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `VmRSS` or `VmHWM` (peak) of a process, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Writes `size` pseudo-random bytes (xorshift, so no two MiB are alike).
fn write_random(path: &Path, size: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
}

#[test]
fn a_gigabyte_goes_in_and_out_with_the_same_sha256_while_lap_serve_memory_stays_flat() {
    let fx = Fixture::new(&[]);
    let big = fx.home.path().join("big.bin");
    write_random(&big, BIG);
    let sent = sha256_file(&big);
    let pid = fx.server.pid();
    let before = memory(pid, "VmRSS:");

    let started = Instant::now();
    let target = format!("{}:/work/big.bin", fx.session);
    let up = lap(&fx.home, ["--json", "cp", big.to_str().unwrap(), &target])
        .success()
        .json();
    assert_eq!(up["bytes"], BIG, "{up}");
    let uploaded = started.elapsed();
    std::fs::remove_file(&big).unwrap();

    let inside = fx.sh("sha256sum /work/big.bin; stat -c '%u %s' /work/big.bin; id -u");
    assert!(
        inside.starts_with(&sent),
        "the sandbox holds other bytes: {inside} (sent {sent})"
    );
    let lines: Vec<&str> = inside.lines().collect();
    let uid = lines[2].trim();
    assert_eq!(
        lines[1],
        format!("{uid} {BIG}"),
        "written as the sandbox user, whole: {inside}"
    );

    let back = fx.home.path().join("back.bin");
    let started = Instant::now();
    let down = lap(&fx.home, ["--json", "cp", &target, back.to_str().unwrap()])
        .success()
        .json();
    assert_eq!(down["bytes"], BIG, "{down}");
    let downloaded = started.elapsed();
    assert_eq!(sha256_file(&back), sent, "the download differs from the upload");

    let peak = memory(pid, "VmHWM:");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "1 GiB up in {uploaded:?}, down in {downloaded:?}; lap serve RSS {} MiB before, peak {} MiB",
        before >> 20,
        peak >> 20
    );
    assert!(
        growth < MAX_RSS_GROWTH,
        "lap serve's peak memory grew by {} MiB while 1 GiB went through (limit {} MiB)",
        growth >> 20,
        MAX_RSS_GROWTH >> 20
    );
}

#[test]
fn directories_travel_as_tar_with_modes_and_links_kept() {
    let fx = Fixture::new(&[]);
    let tree = fx.home.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tree.join("sub/secret"), "s3cret").unwrap();
    std::fs::set_permissions(tree.join("sub/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(tree.join("sub/deeper/data"), vec![7u8; 300_000]).unwrap();
    std::fs::set_permissions(tree.join("sub/deeper"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("sub/secret", tree.join("link")).unwrap();

    // Into an existing directory: it lands inside, under its own name.
    lap(
        &fx.home,
        ["cp", tree.to_str().unwrap(), &format!("{}:/work", fx.session)],
    )
    .success();
    let modes =
        fx.sh("cd /work/tree && stat -c '%a %F %n' run.sh sub/secret sub/deeper link && ./run.sh && readlink link");
    assert_eq!(
        modes,
        "755 regular file run.sh\n600 regular file sub/secret\n750 directory sub/deeper\n777 symbolic link link\nhi\nsub/secret\n"
    );

    let listed = lap(&fx.home, ["--json", "ls", &format!("{}:/work/tree", fx.session)])
        .success()
        .json();
    let names: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["link", "run.sh", "sub"]);
    assert_eq!(listed["entries"][0]["type"], "symlink");
    assert_eq!(listed["entries"][0]["target"], "sub/secret");
    assert_eq!(listed["entries"][1]["mode"], "0755");
    let table = lap(&fx.home, ["ls", &format!("{}:/work/tree", fx.session)])
        .success()
        .stdout;
    assert!(
        table.contains("-rwxr-xr-x") && table.contains("link -> sub/secret") && table.contains("sub/"),
        "{table}"
    );

    // And out again, to a path that does not exist yet.
    let back = fx.home.path().join("back");
    lap(
        &fx.home,
        ["cp", &format!("{}:/work/tree", fx.session), back.to_str().unwrap()],
    )
    .success();
    let mode = |p: &str| std::fs::symlink_metadata(back.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("sub/secret"), 0o600);
    assert_eq!(mode("sub/deeper"), 0o750);
    assert_eq!(std::fs::read(back.join("sub/deeper/data")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(std::fs::read_link(back.join("link")).unwrap(), Path::new("sub/secret"));
}

#[test]
fn ranges_are_honoured_and_downloads_are_never_rendered() {
    let fx = Fixture::new(&[]);
    let http = Http::new(fx.key());
    fx.sh("printf 0123456789 > /work/digits; printf '<script>alert(1)</script>' > /work/page.html");
    let content = fx.url("/content");
    let q = [("path", "/work/digits")];

    let whole = http.get(&content, &q, &[]);
    assert_eq!((whole.status, whole.text().as_str()), (200, "0123456789"));
    assert_eq!(whole.header("accept-ranges"), "bytes");
    let part = http.get(&content, &q, &[("range", "bytes=2-4")]);
    assert_eq!((part.status, part.text().as_str()), (206, "234"));
    assert_eq!(part.header("content-range"), "bytes 2-4/10");
    let tail = http.get(&content, &q, &[("range", "bytes=-3")]);
    assert_eq!(
        (tail.status, tail.text().as_str(), tail.header("content-range").as_str()),
        (206, "789", "bytes 7-9/10")
    );
    let open = http.get(&content, &q, &[("range", "bytes=8-")]);
    assert_eq!((open.status, open.text().as_str()), (206, "89"));
    let past = http.get(&content, &q, &[("range", "bytes=10-")]);
    assert_eq!(past.status, 416, "{}", past.text());
    assert_eq!(past.header("content-range"), "bytes */10");
    // Several ranges: the whole file, as RFC 9110 allows.
    assert_eq!(http.get(&content, &q, &[("range", "bytes=0-1,4-5")]).status, 200);

    // Hostile content is a download, never a page of this origin.
    let page = http.get(&content, &[("path", "/work/page.html")], &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "application/octet-stream");
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert!(
        page.header("content-disposition").starts_with("attachment"),
        "{:?}",
        page.headers
    );
    assert!(
        page.header("content-security-policy").starts_with("sandbox"),
        "{:?}",
        page.headers
    );

    // A directory needs `archive=true`.
    let dir = http.get(&content, &[("path", "/work")], &[]);
    assert_eq!(dir.status, 400, "{}", dir.text());
    assert!(
        dir.json()["hint"].as_str().unwrap().contains("archive"),
        "{}",
        dir.text()
    );

    // Delete: a file; a non-empty directory only recursively.
    fx.sh("mkdir -p /work/gone/a && touch /work/gone/a/f");
    let refused = http.delete(&fx.url(""), &[("path", "/work/gone")]);
    assert_eq!(refused.status, 409, "{}", refused.text());
    let removed = http.delete(&fx.url(""), &[("path", "/work/gone"), ("recursive", "true")]);
    assert_eq!(
        (removed.status, removed.json()["entries"].as_u64()),
        (200, Some(3)),
        "{}",
        removed.text()
    );
    assert_eq!(http.delete(&fx.url(""), &[("path", "/work/digits")]).status, 200);
    assert_eq!(fx.sh("ls /work"), "home\npage.html\n");
}

#[test]
fn an_upload_over_the_limit_is_413_with_a_hint_and_leaves_nothing() {
    let fx = Fixture::new(&["--max-upload-bytes", "100000"]);
    let http = Http::new(fx.key());
    let content = fx.url("/content");
    let q = [("path", "/work/too-big")];
    let declared = http.put(&content, &q, vec![1u8; 100_001]);
    assert_eq!(declared.status, 413, "{}", declared.text());
    assert!(
        declared.json()["hint"].as_str().unwrap().contains("--max-upload-bytes"),
        "{}",
        declared.text()
    );
    let streamed = http.put_chunked(&content, &q, vec![1u8; 300_000]);
    assert_eq!(streamed.status, 413, "{}", streamed.text());
    assert!(streamed.json()["hint"].is_string(), "{}", streamed.text());
    // No file, and no temporary one either.
    assert_eq!(fx.sh("ls -A /work"), "home\n");
    let fits = http.put(
        &content,
        &[("path", "/work/fits"), ("mode", "0640")],
        vec![2u8; 100_000],
    );
    assert_eq!(fits.status, 200, "{}", fits.text());
    assert_eq!(fx.sh("stat -c '%a %s' /work/fits"), "640 100000\n");
}

#[test]
fn a_dead_or_unknown_session_is_a_clear_4xx_with_a_hint() {
    let fx = Fixture::new(&[]);
    let unknown = lap(&fx.home, ["ls", "00000000-0000-4000-8000-000000000000:/work"]);
    assert_ne!(unknown.code, 0);
    assert!(
        unknown.stderr.contains("not found") && unknown.stderr.contains("hint:"),
        "{unknown}"
    );
    let garbage = lap(&fx.home, ["cp", "nosuch:/work/x", "./x"]);
    assert!(
        garbage.stderr.contains("not found") && garbage.stderr.contains("hint:"),
        "{garbage}"
    );

    lap(&fx.home, ["sessions", "delete", &fx.session]).success();
    let http = Http::new(fx.key());
    let dead = http.get(&fx.url(""), &[("path", "/work")], &[]);
    assert_eq!(dead.status, 409, "{}", dead.text());
    let body = dead.json();
    assert!(body["error"].as_str().unwrap().contains("dead"), "{body}");
    assert!(body["hint"].as_str().unwrap().contains("restart"), "{body}");
    let cli = lap(&fx.home, ["cp", "./nothing", &format!("{}:/work/x", fx.session)]);
    assert_ne!(cli.code, 0, "{cli}");
    let ls = lap(&fx.home, ["ls", &format!("{}:/work", fx.session)]);
    assert!(ls.stderr.contains("dead") && ls.stderr.contains("hint:"), "{ls}");

    // Without the master key: the same 401 as every session route.
    let anonymous = reqwest_status_without_key(&fx.url(""));
    assert_eq!(anonymous, 401);
}

fn reqwest_status_without_key(url: &str) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .get(with_query(url, &[("path", "/work")]))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// A tar stream built by hand, for entries no honest `tar` writes.
fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        // Raw bytes: `set_path` itself refuses `..`, as it should for honest archives.
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn traversal_and_symlink_escapes_are_refused() {
    let fx = Fixture::new(&[]);
    let http = Http::new(fx.key());
    // The hostile agent's preparations.
    fx.sh(
        "ln -s /etc /work/etc-link && ln -s ../../etc /work/home/up && ln -s /tmp /work/tmp-link && \
         echo keep > /tmp/victim && ln -s /tmp/victim /work/victim-link && mkdir /work/ro && \
         echo ro > /work/ro/file && chmod 555 /work/ro && mkfifo /work/fifo",
    );
    let content = fx.url("/content");
    let forbidden = |answer: Answer, what: &str| {
        assert_eq!(answer.status, 403, "{what}: {}", answer.text());
        assert!(answer.json()["hint"].is_string(), "{what}: {}", answer.text());
        assert!(!answer.text().contains("root:x:0:0"), "{what} leaked /etc/passwd");
    };
    for path in [
        "/etc/passwd",
        "/work/../etc/passwd",
        "../../etc/passwd",
        "/work/etc-link/passwd",
        "/work/home/up/passwd",
        "up/passwd",
        "/proc/self/environ",
        "/run/lap/harness.sock",
        "/",
    ] {
        forbidden(http.get(&content, &[("path", path)], &[]), &format!("GET {path}"));
        forbidden(http.get(&fx.url(""), &[("path", path)], &[]), &format!("list {path}"));
    }
    // A link that leads out, also at the last component and in a tar download's root.
    forbidden(
        http.get(&content, &[("path", "/work/etc-link"), ("archive", "true")], &[]),
        "tar through a link",
    );
    forbidden(
        http.put(&content, &[("path", "/work/tmp-link/evil")], b"x".to_vec()),
        "PUT through a link",
    );
    forbidden(http.put(&content, &[("path", "/etc/evil")], b"x".to_vec()), "PUT /etc");
    forbidden(
        http.delete(&fx.url(""), &[("path", "/work/etc-link/passwd")]),
        "DELETE through a link",
    );
    forbidden(http.delete(&fx.url(""), &[("path", "/work")]), "DELETE /work");
    forbidden(
        http.put(
            &content,
            &[("path", "/work/x"), ("archive", "true")],
            tar_of(&[("../evil", tar::EntryType::Regular, b"x", None)]),
        ),
        "tar entry ..",
    );
    forbidden(
        http.put(
            &content,
            &[("path", "/work/t1"), ("archive", "true")],
            tar_of(&[
                ("ln", tar::EntryType::Symlink, b"", Some("/tmp")),
                ("ln/evil", tar::EntryType::Regular, b"x", None),
            ]),
        ),
        "tar entry written through its own link",
    );
    let hard = http.put(
        &content,
        &[("path", "/work/t2"), ("archive", "true")],
        tar_of(&[("h", tar::EntryType::Link, b"", Some("/etc/passwd"))]),
    );
    assert_eq!(hard.status, 400, "{}", hard.text());
    assert_eq!(
        fx.sh("ls -A /work/t1; ls /tmp/evil /work/evil /etc/evil 2>&1 | wc -l; cat /tmp/victim"),
        "ln\n3\nkeep\n",
        "nothing was written outside"
    );

    // Replacing a link replaces the link: the file it pointed at keeps its bytes.
    let replaced = http.put(&content, &[("path", "/work/victim-link")], b"new".to_vec());
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert_eq!(
        fx.sh("cat /tmp/victim; stat -c %F /work/victim-link"),
        "keep\nregular file\n"
    );

    // As the sandbox user: a read-only directory stays read-only (the harness itself is root).
    let ro = http.put(&content, &[("path", "/work/ro/new")], b"x".to_vec());
    assert_eq!(ro.status, 403, "{}", ro.text());
    assert!(ro.text().contains("permission denied"), "{}", ro.text());
    assert_eq!(http.delete(&fx.url(""), &[("path", "/work/ro/file")]).status, 403);
    // A FIFO neither hangs nor is read.
    assert_eq!(http.get(&content, &[("path", "/work/fifo")], &[]).status, 400);

    // A directory downloaded as tar carries its links as links, not what they point at.
    let out = fx.home.path().join("out");
    lap(
        &fx.home,
        ["cp", &format!("{}:/work", fx.session), out.to_str().unwrap()],
    )
    .success();
    assert_eq!(std::fs::read_link(out.join("etc-link")).unwrap(), Path::new("/etc"));
    assert_eq!(std::fs::read_link(out.join("home/up")).unwrap(), Path::new("../../etc"));
}

#[test]
fn a_symlink_swapped_in_while_files_move_never_leads_out_of_work() {
    let fx = Fixture::new(&[]);
    let http = Http::new(fx.key());
    // The agent flips /work/race/d and /work/race/u between directories and links to /tmp/outside
    // (inside what the sandbox user may touch, so only the confinement to /work stands in the way),
    // as fast as it can, until the marker file goes.
    fx.sh("mkdir -p /work/race /tmp/outside && echo outside-secret > /tmp/outside/passwd && touch /work/race/running");
    let script = "cd /work/race; n=0; while [ -e running ]; do \
                  mkdir -p d.new u.new && echo harmless > d.new/passwd && rm -rf d u && mv -T d.new d && mv -T u.new u; \
                  ln -sfn /tmp/outside d.link && ln -sfn /tmp/outside u.link && rm -rf d u && mv -T d.link d && mv -T u.link u; \
                  n=$((n+1)); done; echo flips=$n";
    let home = &fx.home;
    let session = fx.session.clone();
    let planted = tar_of(&[("u/planted-by-tar", tar::EntryType::Regular, b"x", None)]);
    let racer = std::thread::scope(|scope| {
        let racer = scope.spawn(move || lap(home, ["exec", &session, "--", "sh", "-c", script]));
        let (mut harmless, mut refused, mut uploads) = (0, 0, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline || harmless == 0 || refused == 0 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(20),
                "the race never went both ways"
            );
            let answer = http.get(&fx.url("/content"), &[("path", "/work/race/d/passwd")], &[]);
            assert!(
                !answer.text().contains("outside-secret"),
                "a file outside /work leaked through the swapped link"
            );
            match answer.status {
                200 => {
                    assert_eq!(answer.text(), "harmless\n");
                    harmless += 1;
                }
                403 | 404 => refused += 1,
                other => panic!("unexpected {other}: {}", answer.text()),
            }
            let put = http.put(
                &fx.url("/content"),
                &[("path", "/work/race/u/planted-by-put")],
                b"x".to_vec(),
            );
            let tar = http.put(
                &fx.url("/content"),
                &[("path", "/work/race"), ("archive", "true")],
                planted.clone(),
            );
            uploads += u32::from(put.status == 200) + u32::from(tar.status == 200);
        }
        fx.sh("rm /work/race/running");
        eprintln!("{harmless} harmless reads, {refused} refused, {uploads} uploads landed inside");
        racer.join().unwrap()
    });
    assert!(racer.stdout.contains("flips="), "{racer}");
    let outside = fx.sh("find /tmp/outside -name 'planted*' | wc -l; cat /tmp/outside/passwd");
    assert_eq!(
        outside, "0\noutside-secret\n",
        "an upload went out through the swapped link"
    );
}

#[test]
fn the_openapi_document_describes_the_file_routes_and_their_shapes() {
    let doc = serde_json::to_value(lap::api::openapi()).unwrap();
    let files = "/api/v1/managed_agents/sessions/{id}/files";
    for (path, method) in [
        (files.to_owned(), "get"),
        (files.to_owned(), "delete"),
        (format!("{files}/stat"), "get"),
        (format!("{files}/content"), "get"),
        (format!("{files}/content"), "put"),
    ] {
        let operation = &doc["paths"][&path][method];
        assert_eq!(
            operation["security"],
            serde_json::json!([{"master_key": []}]),
            "{method} {path}"
        );
        let params: Vec<&str> = operation["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has parameters"))
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"path"), "{method} {path}: {params:?}");
    }
    let download = &doc["paths"][format!("{files}/content")]["get"];
    assert!(download["responses"]["206"].is_object() && download["responses"]["416"].is_object());
    assert!(
        download["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Range")
    );
    assert!(doc["paths"][format!("{files}/content")]["put"]["responses"]["413"].is_object());
    for schema in ["FileList", "FileEntry", "FileKind", "Uploaded", "Deleted"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "no schema {schema}");
    }
}

/// A pod's harness (`lap harness --listen`, as the Kubernetes backend reaches it) serves the same
/// file operations over TCP behind its token, confined the same way. It runs here as `nobody`, as a
/// pod's harness container runs as the unprivileged sandbox user, in a fresh directory under /tmp.
#[test]
fn a_pod_harness_serves_the_same_file_operations_over_tcp() {
    use lap::sandbox::files::{self as ops, Conn};
    use lap::wire::harness::files::{ReadRequest, WriteRequest};
    use std::os::unix::process::CommandExt;

    const NOBODY: u32 = 65534;
    let dir = tempfile::Builder::new()
        .prefix("lap-files-tcp-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "pod-token-1234").unwrap();
    let home = dir.path().join("home");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lap"));
    command
        .args(["harness", "--listen", "127.0.0.1:0", "--home"])
        .arg(&home)
        .arg("--token-file")
        .arg(&token_file)
        .env_clear()
        .uid(NOBODY)
        .gid(NOBODY);
    let (mut child, line) = support::spawn_first_line(command);
    let addr = support::addr_after(&line, "listening on ");
    let base = dir.path().display().to_string();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc-link")).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connect = || async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            lap::wire::harness::write_auth(&mut stream, "pod-token-1234")
                .await
                .unwrap();
            Box::new(stream) as Conn
        };
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let path = format!("{base}/home/data.bin");
        let written = ops::write(
            connect().await,
            WriteRequest {
                path: path.clone(),
                mode: Some(0o640),
                archive: false,
                max_bytes: 1 << 20,
            },
            futures_util::stream::iter(data.chunks(70_000).map(|c| Ok::<_, ops::FilesError>(c.to_vec()))),
        )
        .await
        .expect("upload over TCP");
        assert_eq!(written.bytes, data.len() as u64);
        let entry = ops::stat(connect().await, &path).await.unwrap();
        assert_eq!((entry.size, entry.mode.as_str()), (data.len() as u64, "0640"));
        let mut reading = ops::read(
            connect().await,
            ReadRequest {
                path: path.clone(),
                range: None,
                archive: false,
            },
        )
        .await
        .expect("download over TCP");
        let mut back = Vec::new();
        while let Some(chunk) = reading.next_chunk().await.unwrap() {
            back.extend(chunk);
        }
        assert!(back == data, "the bytes came back changed");
        // Relative paths start in the pod's home.
        assert_eq!(
            ops::list(connect().await, ".").await.unwrap().entries[0].name,
            "data.bin"
        );
        for outside in [
            "/etc/passwd".to_owned(),
            format!("{base}/etc-link/passwd"),
            format!("{base}/../x"),
        ] {
            let err = ops::stat(connect().await, &outside).await.unwrap_err();
            assert!(
                matches!(&err, ops::FilesError::File(e) if e.code == lap::wire::files::FileErrorCode::Forbidden),
                "{outside}: {err}"
            );
        }
        // Without the pod's token, nothing.
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        lap::wire::harness::write_auth(&mut stream, "wrong").await.unwrap();
        assert!(ops::stat(Box::new(stream), &path).await.is_err());
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path().join("home/data.bin")).unwrap()),
        NOBODY,
        "written as the pod's user"
    );
}
