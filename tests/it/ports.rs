//! A sandbox's ports, end to end on real sandboxes (`lap serve --backend local`): a
//! `python3 -m http.server` inside one is reached through `lap port-forward`, through the proxy path
//! `…/sessions/{id}/ports/{port}/…` and through a signed preview URL on the preview origin; preview
//! URLs that expired, were tampered with, revoked, or belong to another session or port are refused;
//! a WebSocket echo server in the sandbox works through the proxy path and a preview; and, in
//! headless Chromium, a page served from the sandbox through a preview URL can neither read nor call
//! the web UI's API although the browser is signed in to it.
//!
//! Also attacked: the master key and lap's own cookies never reach the sandbox's server, the proxy
//! path takes no UI cookie, and lap's own egress proxy port is neither listed nor reachable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::support;
use crate::support::{Home, LAP, TestServer, lap};

const WAIT: Duration = Duration::from_secs(20);
const PREFIX: &str = "/api/v1/managed_agents";
/// The sandbox's egress proxy port, lap's own.
const PROXY_PORT: u16 = 3128;

/// A child process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A ready session of `agent`; returns its id.
fn ready_session(home: &Home, agent: &str) -> String {
    let session = lap(home, ["--json", "sessions", "create", agent]).success().json();
    let id = session["id"].as_str().unwrap().to_owned();
    support::wait_until(&format!("session {id} ready"), WAIT, || {
        let shown = lap(home, ["--json", "sessions", "show", &id]).success().json();
        match shown["status"].as_str() {
            Some("ready") => Ok(()),
            Some("creating") => Err(shown),
            other => panic!("session {id} is {other:?}: {shown}"),
        }
    });
    id
}

/// Writes `contents` to `path` inside the sandbox.
fn write_file(home: &Home, session: &str, path: &str, contents: &[u8]) {
    home.lap()
        .stdin(contents)
        .run([
            "exec",
            session,
            "--",
            "sh",
            "-c",
            &format!("mkdir -p \"$(dirname {path})\" && cat > {path}"),
        ])
        .success();
}

/// Starts `command` in the background inside the sandbox (it outlives the `lap exec`).
fn start_background(home: &Home, session: &str, command: &str, log: &str) {
    lap(
        home,
        [
            "exec",
            session,
            "--",
            "sh",
            "-c",
            &format!("nohup {command} >{log} 2>&1 </dev/null &"),
        ],
    )
    .success();
}

/// Waits until `lap sessions ports` lists every one of `ports`; returns the listed ports.
fn wait_listening(home: &Home, session: &str, ports: &[u16]) -> Vec<u16> {
    support::wait_until(&format!("the sandbox listening on {ports:?}"), WAIT, || {
        let listed = lap(home, ["--json", "sessions", "ports", session]).success().json();
        let listed: Vec<u16> = listed["ports"]
            .as_array()
            .expect("a ports array")
            .iter()
            .map(|p| p["port"].as_u64().expect("a port") as u16)
            .collect();
        if ports.iter().all(|p| listed.contains(p)) {
            Ok(listed)
        } else {
            Err(format!("it listens on {listed:?}"))
        }
    })
}

/// One HTTP/1.1 exchange.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET path` on `addr` with `headers`, `Connection: close`.
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    get_on(addr, &addr.to_string(), path, headers)
}

/// [`get`] with `Host: host`.
fn get_on(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut body = raw[end + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Reply { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
    out
}

fn server_addr(server: &TestServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port))
}

/// `host:port` of an `http://` URL, and its path.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (host.parse().expect("a numeric host:port"), path.to_owned())
}

/// A preview URL of `port` from `lap sessions url`, with extra arguments.
fn preview_url(home: &Home, session: &str, port: u16, extra: &[&str]) -> String {
    let port = port.to_string();
    let mut args = vec!["--json", "sessions", "url", session, &port];
    args.extend_from_slice(extra);
    let minted = lap(home, args).success().json();
    assert_eq!(minted["port"].as_u64(), Some(port.parse().unwrap()));
    minted["url"].as_str().expect("a url").to_owned()
}

/// Opens a preview URL: the preview cookie it sets, when it is accepted.
fn open_preview(url: &str) -> Result<String, Reply> {
    let (addr, path) = split_url(url);
    let reply = get(addr, &path, &[]);
    if reply.status != 303 {
        return Err(reply);
    }
    assert_eq!(reply.header("location"), Some("/"));
    let cookie = reply.header("set-cookie").expect("a preview cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    Ok(cookie.split(';').next().unwrap().to_owned())
}

/// The same URL with its token changed by `change` (payload text, signature bytes).
fn tampered(url: &str, change: impl Fn(String, Vec<u8>) -> (String, Vec<u8>)) -> String {
    let (base, token) = url.rsplit_once('/').unwrap();
    let (payload, tag) = token.split_once('.').unwrap();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let (payload, tag) = change(payload, URL_SAFE_NO_PAD.decode(tag).unwrap());
    format!(
        "{base}/{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// `lap port-forward SESSION MAPPINGS…`: the process and the local address of each mapping.
fn port_forward(home: &Home, session: &str, mappings: &[&str]) -> (Killed, Vec<SocketAddr>) {
    let mut child = Command::new(LAP)
        .arg("port-forward")
        .arg(session)
        .args(mappings)
        .env_clear()
        .envs(home.env())
        .current_dir(home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn lap port-forward");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let child = Killed(child);
    let mut addrs = Vec::new();
    for _ in mappings {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line from lap port-forward");
        // `Forwarding from 127.0.0.1:PORT -> PORT`
        let addr = line
            .strip_prefix("Forwarding from ")
            .and_then(|rest| rest.split(" -> ").next())
            .unwrap_or_else(|| panic!("unexpected line from lap port-forward: {line:?}"));
        addrs.push(addr.parse().expect("a local address"));
    }
    (child, addrs)
}

/// Signs in to the web UI with the master key; returns the cookie's `name=value`.
fn ui_cookie(server: &TestServer) -> String {
    let mut stream = TcpStream::connect(server_addr(server)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "POST /api/ui/auth/cookie HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.port,
        server.master_key()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let line = raw
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie from the sign-in: {raw}"));
    line.split_once(':')
        .unwrap()
        .1
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A ready shell session running `python3 -m http.server 8000` over `/tmp/www` (an index page and
/// a 3 MiB file) and the header-echo server on 8001.
fn web_session(home: &Home) -> (String, String, Vec<u8>) {
    lap(home, ["agents", "create", "web", "--harness", "shell"]).success();
    let session = ready_session(home, "web");
    let page = format!("<h1>served from inside sandbox session {session}</h1>\n");
    write_file(home, &session, "/tmp/www/index.html", page.as_bytes());
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    // Made inside: `lap exec`'s stdin is limited.
    lap(
        home,
        [
            "exec",
            &session,
            "--",
            "python3",
            "-c",
            "open('/tmp/www/big.bin', 'wb').write(bytes(i % 251 for i in range(3 * 1024 * 1024)))",
        ],
    )
    .success();
    write_file(home, &session, "/tmp/headers.py", include_bytes!("../ports/headers.py"));
    start_background(
        home,
        &session,
        "python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www",
        "/tmp/http.log",
    );
    start_background(home, &session, "python3 /tmp/headers.py 8001", "/tmp/headers.log");
    let listed = wait_listening(home, &session, &[8000, 8001]);
    assert!(
        !listed.contains(&PROXY_PORT),
        "lap's egress proxy port is listed: {listed:?}"
    );
    (session, page, big)
}

#[test]
fn a_sandbox_http_server_is_reached_by_port_forward_the_proxy_path_and_a_preview_url() {
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    let (session, page, big) = web_session(&home);
    let key = server.master_key();
    let bearer = format!("Bearer {key}");

    // Port-forward: two ports at once, local ports picked by the system.
    let (_forward, addrs) = port_forward(&home, &session, &["0:8000", "0:8001"]);
    let index = get(addrs[0], "/index.html", &[]);
    assert_eq!((index.status, index.text()), (200, page.clone()));
    let fetched = get(addrs[0], "/big.bin", &[]);
    assert_eq!(fetched.status, 200);
    assert!(
        fetched.body == big,
        "the 3 MiB file came back changed ({} bytes)",
        fetched.body.len()
    );
    // Several connections at once, each its own stream.
    let first = addrs[0];
    let parallel: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(first, "/index.html", &[]).status))
        .collect();
    for handle in parallel {
        assert_eq!(handle.join().unwrap(), 200);
    }
    let echoed = get(addrs[1], "/", &[]).text().to_ascii_lowercase();
    assert!(echoed.contains(&format!("host: {}", addrs[1])), "{echoed}");

    // The proxy path: the master key as bearer, and only that.
    let api = server_addr(&server);
    let path = format!("{PREFIX}/sessions/{session}/ports/8000/index.html");
    let proxied = get(api, &path, &[("Authorization", &bearer)]);
    assert_eq!((proxied.status, proxied.text()), (200, page.clone()));
    assert!(
        proxied
            .header("content-security-policy")
            .is_some_and(|csp| csp.starts_with("sandbox")),
        "sandbox content on the API origin is confined to an opaque origin: {:?}",
        proxied.headers
    );
    let bare = get(
        api,
        &format!("{PREFIX}/sessions/{session}/ports/8000"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(bare.status, 308, "`/ports/8000` redirects to `/ports/8000/`");
    let root = get(
        api,
        &format!("{PREFIX}/sessions/{session}/ports/8000/"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(root.status, 200, "{}", root.text());
    assert_eq!(get(api, &path, &[]).status, 401);
    let cookie = ui_cookie(&server);
    assert_eq!(
        get(api, &path, &[("Cookie", &cookie)]).status,
        401,
        "the UI's cookie does not open sandbox content on the API origin"
    );
    assert_eq!(
        get(
            api,
            &format!("{PREFIX}/sessions/{session}/ports/{PROXY_PORT}/"),
            &[("Authorization", &bearer)]
        )
        .status,
        502,
        "lap's egress proxy port is not reachable"
    );
    // What reaches the sandbox's server: no master key, none of lap's cookies.
    let echoed = get(
        api,
        &format!("{PREFIX}/sessions/{session}/ports/8001/"),
        &[("Authorization", &bearer), ("Cookie", &format!("{cookie}; theme=dark"))],
    );
    assert_eq!(echoed.status, 200);
    let seen = echoed.text().to_ascii_lowercase();
    assert!(
        !seen.contains(&key.to_ascii_lowercase()),
        "the master key reached the sandbox:\n{seen}"
    );
    assert!(!seen.contains("authorization"), "{seen}");
    assert!(
        !seen.contains("lap_ui_session"),
        "the UI's cookie reached the sandbox:\n{seen}"
    );
    assert!(seen.contains("cookie: theme=dark"), "{seen}");
    assert!(
        echoed.headers_named("set-cookie").is_empty(),
        "a sandbox sets no cookie on the API origin: {:?}",
        echoed.headers
    );

    // A signed preview URL: no master key, an origin of its own.
    let url = preview_url(&home, &session, 8000, &[]);
    let (preview_addr, _) = split_url(&url);
    assert_ne!(preview_addr, api, "previews are not served from the API's origin");
    let preview_cookie = open_preview(&url).unwrap_or_else(|r| panic!("the preview URL was refused: {r:?}"));
    let previewed = get(preview_addr, "/index.html", &[("Cookie", &preview_cookie)]);
    assert_eq!((previewed.status, previewed.text()), (200, page.clone()));
    let through = get(preview_addr, "/big.bin", &[("Cookie", &preview_cookie)]);
    assert!(through.body == big, "the file came back changed through the preview");
    assert_eq!(
        get(preview_addr, "/index.html", &[]).status,
        403,
        "no cookie, no preview"
    );
    assert_eq!(
        get(preview_addr, &format!("{PREFIX}/agents"), &[("Authorization", &bearer)]).status,
        403,
        "the preview origin serves nothing of the API, master key or not"
    );
    // The headers server through a preview: none of lap's cookies reach it, its own cookie passes.
    let headers_cookie = open_preview(&preview_url(&home, &session, 8001, &[])).unwrap();
    let echoed = get(
        preview_addr,
        "/",
        &[("Cookie", &format!("{headers_cookie}; {cookie}; theme=dark"))],
    );
    let seen = echoed.text();
    assert!(
        !seen.contains("lap_ui_session") && !seen.contains("lap_preview"),
        "{seen}"
    );
    assert!(seen.contains("theme=dark"), "{seen}");
    assert_eq!(echoed.headers_named("set-cookie"), vec!["app=1; Path=/"]);
}

#[test]
fn preview_urls_that_expired_were_tampered_with_revoked_or_belong_elsewhere_are_refused() {
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    let (session, page, _) = web_session(&home);
    let url = preview_url(&home, &session, 8000, &[]);
    let (preview_addr, _) = split_url(&url);
    let refused = |url: &str| match open_preview(url) {
        Ok(cookie) => panic!("{url} was accepted (cookie {cookie})"),
        Err(reply) => {
            assert_eq!(reply.status, 403, "{reply:?}");
            assert!(reply.headers_named("set-cookie").is_empty());
        }
    };
    let works = |cookie: &str| {
        let reply = get(preview_addr, "/index.html", &[("Cookie", cookie)]);
        reply.status == 200 && reply.text() == page
    };
    let opened = open_preview(&url).expect("a fresh URL works");
    assert!(works(&opened));

    // Tampered: the signature, the port, the session, the expiry.
    refused(&tampered(&url, |p, mut tag| {
        tag[0] ^= 1;
        (p, tag)
    }));
    refused(&tampered(&url, |p, tag| (p.replace(".8000.", ".8001."), tag)));
    let other_session = "00000000-0000-4000-8000-000000000000";
    refused(&tampered(&url, |p, tag| (p.replace(&session, other_session), tag)));
    refused(&tampered(&url, |p, tag| {
        let (head, expires) = p.rsplit_once('.').unwrap();
        let later: i64 = expires.parse::<i64>().unwrap() + 86_400;
        (format!("{head}.{later}"), tag)
    }));
    let forged_cookie = format!("lap_preview={}", url.rsplit_once('/').unwrap().1.replace('.', ".A"));
    assert_eq!(
        get(preview_addr, "/index.html", &[("Cookie", &forged_cookie)]).status,
        403
    );

    // Another port's URL does not open this port, and another session's URL not this session.
    let other_port = open_preview(&preview_url(&home, &session, 8001, &[])).unwrap();
    assert!(
        !get(preview_addr, "/index.html", &[("Cookie", &other_port)])
            .text()
            .contains(&page)
    );
    let other = ready_session(&home, "web");
    let other_cookie = open_preview(&preview_url(&home, &other, 8000, &[])).unwrap();
    let reply = get(preview_addr, "/index.html", &[("Cookie", &other_cookie)]);
    assert_eq!(
        reply.status,
        502,
        "nothing listens in the other session: {}",
        reply.text()
    );
    assert!(!reply.text().contains(&page));

    // Expired: works until its TTL has passed, then is refused (opening, and with its cookie).
    let short = preview_url(&home, &session, 8000, &["--ttl", "3s"]);
    let short_cookie = open_preview(&short).expect("a URL within its TTL works");
    assert!(works(&short_cookie));
    support::wait_until("the 3 s preview URL expired", WAIT, || !works(&short_cookie));
    refused(&short);
    assert_eq!(get(preview_addr, "/", &[("Cookie", &short_cookie)]).status, 403);

    // Revoked: this port's URLs, then every port's; a browser that opened one loses it at once.
    let other_port_url = preview_url(&home, &session, 8001, &[]);
    let revoked = lap(&home, ["--json", "sessions", "url", &session, "8000", "--revoke"])
        .success()
        .json();
    assert_eq!(revoked["port"].as_u64(), Some(8000));
    assert!(!works(&opened), "a revoked URL's cookie still works");
    refused(&url);
    assert!(
        open_preview(&other_port_url).is_ok(),
        "another port's URL is not revoked"
    );
    let fresh = open_preview(&preview_url(&home, &session, 8000, &[])).expect("a URL minted after the revocation");
    assert!(works(&fresh));
    lap(&home, ["sessions", "url", &session, "--revoke"]).success();
    refused(&other_port_url);
    assert!(!works(&fresh));

    // A deleted session's URLs stop working too.
    let last = open_preview(&preview_url(&home, &session, 8000, &[])).unwrap();
    lap(&home, ["sessions", "delete", &session]).success();
    assert!(!works(&last));
    assert_eq!(
        get(
            server_addr(&server),
            &format!("{PREFIX}/sessions/{session}/ports/8000/"),
            &[("Authorization", &format!("Bearer {}", server.master_key()))]
        )
        .status,
        409
    );
}

#[test]
fn with_a_preview_domain_each_sessions_port_is_an_origin_of_its_own() {
    let home = Home::new();
    let server = TestServer::start_local_with(&home, ["--preview-domain", "localhost"]);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    let (session, page, _) = web_session(&home);
    let url = preview_url(&home, &session, 8000, &[]);
    let own = format!("p8000-{session}.localhost");
    let rest = url
        .strip_prefix(&format!("http://{own}:"))
        .unwrap_or_else(|| panic!("{url} is not on the port's own host name"));
    let (port, path) = rest.split_once('/').unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().unwrap()));
    let path = format!("/{path}");
    let own_host = format!("{own}:{port}");
    let other_port = format!("p8001-{session}.localhost:{port}");

    // Opened anywhere but on its own host name, the URL is refused.
    assert_eq!(get(addr, &path, &[]).status, 403);
    assert_eq!(get_on(addr, &other_port, &path, &[]).status, 403);
    let opened = get_on(addr, &own_host, &path, &[]);
    assert_eq!(opened.status, 303, "{opened:?}");
    let cookie = opened
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let served = get_on(addr, &own_host, "/index.html", &[("Cookie", &cookie)]);
    assert_eq!((served.status, served.text()), (200, page));
    // Its cookie, carried to another session's or port's host name, opens nothing there.
    assert_eq!(get_on(addr, &other_port, "/", &[("Cookie", &cookie)]).status, 403);
    let other_session = format!("p8000-00000000-0000-4000-8000-000000000000.localhost:{port}");
    assert_eq!(get_on(addr, &other_session, "/", &[("Cookie", &cookie)]).status, 403);
    assert_eq!(get(addr, "/", &[("Cookie", &cookie)]).status, 403);
}

#[test]
fn a_websocket_server_in_the_sandbox_works_through_the_proxy_path_and_a_preview() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    lap(&home, ["agents", "create", "ws", "--harness", "shell"]).success();
    let session = ready_session(&home, "ws");
    write_file(
        &home,
        &session,
        "/tmp/ws_echo.py",
        include_bytes!("../ports/ws_echo.py"),
    );
    start_background(&home, &session, "python3 /tmp/ws_echo.py 9000", "/tmp/ws.log");
    wait_listening(&home, &session, &[9000]);
    let preview_cookie = open_preview(&preview_url(&home, &session, 9000, &[])).unwrap();
    let (preview_addr, _) = split_url(&preview_url(&home, &session, 9000, &[]));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let echo = |url: String, header: (&'static str, String)| async move {
            let mut request = url.as_str().into_client_request().unwrap();
            request.headers_mut().insert(header.0, header.1.parse().unwrap());
            let (mut socket, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
                .await
                .expect("a WebSocket handshake within the deadline")
                .unwrap_or_else(|e| panic!("the WebSocket through {url} failed: {e}"));
            assert_eq!(response.status(), 101);
            for text in ["hot reload", "second message"] {
                socket.send(Message::Text(text.into())).await.unwrap();
                let back = tokio::time::timeout(WAIT, socket.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                assert_eq!(back, Message::Text(format!("echo:{text}").into()));
            }
            let big = vec![7u8; 200_000];
            socket.send(Message::Binary(big.clone().into())).await.unwrap();
            let back = tokio::time::timeout(WAIT, socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let mut expected = b"echo:".to_vec();
            expected.extend_from_slice(&big);
            assert!(
                back == Message::Binary(expected.into()),
                "the binary message came back changed"
            );
            socket.close(None).await.unwrap();
        };
        let proxy = format!(
            "ws://127.0.0.1:{}{PREFIX}/sessions/{session}/ports/9000/hmr",
            server.port
        );
        echo(
            proxy.clone(),
            ("authorization", format!("Bearer {}", server.master_key())),
        )
        .await;
        echo(format!("ws://{preview_addr}/hmr"), ("cookie", preview_cookie)).await;

        // A WebSocket spliced for an API key is cut when the key is revoked.
        lap(&home, ["users", "create", "ops"]).success();
        let made = lap(&home, ["keys", "create", "--user", "ops", "--role", "admin", "--json"])
            .success()
            .json();
        let mut request = proxy.as_str().into_client_request().unwrap();
        let bearer = format!("Bearer {}", made["key"].as_str().unwrap());
        request.headers_mut().insert("authorization", bearer.parse().unwrap());
        let (mut socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .unwrap()
            .expect("a WebSocket with an API key");
        socket.send(Message::Text("before".into())).await.unwrap();
        let back = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, Message::Text("echo:before".into()));
        lap(&home, ["keys", "revoke", made["id"].as_str().unwrap()]).success();
        let cut = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            cut.is_ok(),
            "the spliced WebSocket was not cut within 5 s of the revocation"
        );
    });
}

/// Runs `tests/ui/preview_origin.mjs` in headless Chromium: signed in to the web UI, it opens the
/// sandbox's port from the session page (a preview URL, in a new tab); the page served there tries to
/// read and call the UI's API.
#[test]
fn a_page_from_a_preview_url_cannot_read_or_call_the_web_uis_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("LAP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let ui_dir = root.join("tests/ui");
    if let Err(why) = browser_prerequisites(&chromium, &ui_dir) {
        support::skip(&why);
        return;
    }
    let home = Home::new();
    let server = TestServer::start_local(&home);
    let _cleanup = support::LocalSandboxes(server.data_dir().to_owned());
    let (_, body) = server.http_get("/", None);
    if body.contains("web UI was not built") {
        support::skip("this lap was built without its web UI: install Node.js and npm, then rebuild");
        return;
    }
    lap(&home, ["agents", "create", "web", "--harness", "shell"]).success();
    let session = ready_session(&home, "web");
    write_file(
        &home,
        &session,
        "/tmp/www/attack.html",
        include_bytes!("../ports/attack.html"),
    );
    start_background(
        &home,
        &session,
        "python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp/www",
        "/tmp/http.log",
    );
    wait_listening(&home, &session, &[8000]);
    let agents_before = lap(&home, ["--json", "agents", "list"]).success().json();

    let script = ui_dir.join("preview_origin.mjs");
    let out = Command::new("node")
        .arg(&script)
        .current_dir(&ui_dir)
        .env("LAP_URL", &server.url)
        .env("LAP_MASTER_KEY", server.master_key())
        .env("LAP_CHROMIUM", &chromium)
        .env("LAP_SESSION", &session)
        .env("HOME", home.path())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n--- stderr\n{}\n--- lap serve\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    println!("{stdout}");
    for step in [
        "ok: signed in to the web UI",
        "ok: the web UI lists the port and opens it on the preview origin",
        "ok: the page cannot read the API",
        "ok: the page cannot call the API",
        "ok: the page sees no cookie of the UI",
    ] {
        assert!(stdout.contains(step), "missing `{step}`:\n{stdout}");
    }
    // The attack page's POST created nothing.
    let agents_after = lap(&home, ["--json", "agents", "list"]).success().json();
    assert_eq!(
        agents_before, agents_after,
        "the page from the sandbox created an agent"
    );
}

/// Chromium, node, and playwright-core in `tests/ui/node_modules` (`npm ci` there once, under the
/// same lock as tests/it/ui.rs, so parallel browser tests do not race), or why they are missing.
fn browser_prerequisites(chromium: &str, ui_dir: &Path) -> Result<(), String> {
    if !Path::new(chromium).is_file() {
        return Err(format!("no Chromium at {chromium} (apt-get install chromium)"));
    }
    if !Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Err("no `node` on PATH (apt-get install nodejs npm)".to_owned());
    }
    let lock = std::fs::File::create(std::env::temp_dir().join("lap-tests-ui-npm-ci.lock"))
        .map_err(|e| format!("cannot create the npm lock file: {e}"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock the npm lock file: {e}"))?;
    if !ui_dir.join("node_modules/playwright-core/package.json").is_file() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(ui_dir)
            .output()
            .map_err(|e| format!("cannot run `npm ci` in tests/ui ({e}); apt-get install npm"))?;
        if !out.status.success() {
            return Err(format!(
                "`npm ci` in tests/ui failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}
