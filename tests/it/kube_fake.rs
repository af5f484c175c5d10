//! An in-process fake Kubernetes API server (axum, in memory, on 127.0.0.1) for the flows of the
//! Kubernetes backend that need state: create, get, list by label, watch, merge patch with a
//! `resourceVersion` precondition, delete with owner-reference garbage collection, and the
//! port-forward WebSocket (`v4.channel.k8s.io`), which it connects to a local TCP address per pod
//! port. kube-rs talks to it over real HTTP, so its request building, decoding, watcher and
//! WebSocket code run as against a cluster.
//!
//! It implements only what lap uses: namespaced pods, secrets, networkpolicies,
//! persistentvolumeclaims and (`snapshot.storage.k8s.io/v1`, with its discovery document, unless
//! [`FakeApi::without_snapshot_api`]) volumesnapshots; equality label selectors; lists in pages
//! (`limit`, `continue`); JSON merge patch.
//! A test may hold a pod's port-forwards unanswered ([`FakeApi::hold_forwards`]).
//! Pods come up ready at once unless [`FakeApi::new_pods_get`] or [`FakeApi::set_pod_status`] say
//! otherwise; a claim is bound at once with the capacity it asks for, and one deleted while a pod
//! mounts it is only marked for deletion until that pod is gone (the `pvc-protection` finalizer); a snapshot of a claim that
//! exists is ready to use at once with the claim's capacity as its restore size, one of a claim that
//! does not is failed with the snapshot controller's error, unless [`FakeApi::new_snapshots_get`]
//! says otherwise. It is a model of the API's contract, not of a kubelet:
//! nothing runs, unless a test plays the kubelet with [`FakeApi::run_pods_with`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The fake's state.
#[derive(Default)]
struct Inner {
    /// (resource, name) → object.
    objects: BTreeMap<(String, String), Value>,
    version: u64,
    /// Every change: (resourceVersion, resource, type, object).
    events: Vec<(u64, String, &'static str, Value)>,
    /// Pod port → where a port-forward to it connects.
    forwards: HashMap<u16, SocketAddr>,
    /// Every request: "METHOD path".
    seen: Vec<String>,
    /// The status new pods get (`None`: ready at once).
    new_pod_status: Option<Value>,
    /// Starts a pod's containers once its Secret exists.
    kubelet: Option<Kubelet>,
    /// (pod, port) → where a port-forward to that pod's port connects, over [`Inner::forwards`].
    pod_forwards: HashMap<(String, u16), SocketAddr>,
    /// What a test runs when an object of a resource is created ([`FakeApi::on_create`]).
    on_create: Vec<(String, OnCreate)>,
    /// Whether `snapshot.storage.k8s.io/v1` is missing (a cluster without the CSI snapshot CRDs).
    no_snapshot_api: bool,
    /// The status new VolumeSnapshots get (`None`: ready, or failed when their claim is missing).
    new_snapshot_status: Option<Value>,
    /// (pod, port) whose port-forwards are taken but not answered ([`FakeApi::hold_forwards`]).
    held: std::collections::HashSet<(String, u16)>,
    /// Where it listens, and the task accepting there (`None` while it is down).
    addr: Option<SocketAddr>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A test's part when an object is created (a CSI driver provisioning a claim, a snapshot
/// controller taking a snapshot): given the object as stored.
pub type OnCreate = Arc<dyn Fn(&Value) + Send + Sync>;

/// A test's kubelet: given a pod and its Secret (base64 `data`, as the API returns it), starts what
/// the pod runs and returns where each of its ports is served.
pub type Kubelet = Arc<dyn Fn(&Value, &Value) -> Vec<(u16, SocketAddr)> + Send + Sync>;

#[derive(Clone, Default)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
}

type Reply = Response;

fn status(code: StatusCode, reason: &str, message: &str) -> Reply {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

fn kind_of(resource: &str) -> Option<(&'static str, &'static str)> {
    match resource {
        "pods" => Some(("v1", "Pod")),
        "secrets" => Some(("v1", "Secret")),
        "networkpolicies" => Some(("networking.k8s.io/v1", "NetworkPolicy")),
        "persistentvolumeclaims" => Some(("v1", "PersistentVolumeClaim")),
        "volumesnapshots" => Some(("snapshot.storage.k8s.io/v1", "VolumeSnapshot")),
        _ => None,
    }
}

fn matches(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][key].as_str() == Some(value)
    })
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().unwrap();
            for (key, value) in fields {
                if value.is_null() {
                    map.remove(key);
                } else {
                    merge(map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// The status of a pod that came up: running, every container ready.
pub fn ready_status(pod: &Value) -> Value {
    let containers: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "ready": true, "restartCount": 0, "image": c["image"], "imageID": "",
                        "state": {"running": {"startedAt": "2026-12-03T07:00:00Z"}}})
        })
        .collect();
    json!({"phase": "Running", "containerStatuses": containers})
}

impl FakeApi {
    /// Serves the fake on 127.0.0.1; returns it and its URL.
    pub async fn start() -> (Self, String) {
        let api = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        api.inner.lock().unwrap().addr = Some(addr);
        api.serve(listener);
        (api, format!("http://{addr}"))
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/version", get(|| async { axum::Json(json!({"major": "1", "minor": "35", "gitVersion": "v1.35.0-fake",
                "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"})) }))
            .route("/api/v1/namespaces/{ns}/pods/{name}/portforward", any(portforward))
            .route("/api/v1/namespaces/{ns}/{resource}", any(collection))
            .route("/api/v1/namespaces/{ns}/{resource}/{name}", any(object))
            .route("/apis/networking.k8s.io/v1/namespaces/{ns}/{resource}", any(collection))
            .route("/apis/networking.k8s.io/v1/namespaces/{ns}/{resource}/{name}", any(object))
            .route("/apis/snapshot.storage.k8s.io/v1", get(snapshot_discovery))
            .route("/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/{resource}", any(snapshot_collection))
            .route("/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/{resource}/{name}", any(snapshot_object))
            .fallback(|| async { status(StatusCode::NOT_FOUND, "NotFound", "the fake serves no such path") })
            .layer(axum::middleware::from_fn_with_state(self.clone(), record))
            .with_state(self.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        self.inner.lock().unwrap().server = Some(task);
    }

    /// Takes the API server down (it stops listening: connections are refused, as by an API server
    /// that is gone) or brings it back on the same address, with its objects.
    pub async fn set_down(&self, down: bool) {
        let (task, addr) = {
            let mut inner = self.inner.lock().unwrap();
            (inner.server.take(), inner.addr.unwrap())
        };
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        if !down {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            self.serve(listener);
        }
    }

    /// A kube client of the fake, default namespace `lap`.
    pub fn client(url: &str) -> kube::Client {
        let mut config = kube::Config::new(url.parse().unwrap());
        config.default_namespace = "lap".into();
        kube::Client::try_from(config).unwrap()
    }

    /// Connects port-forwards to pod port `port` (any pod) with `addr`.
    pub fn forward(&self, port: u16, addr: SocketAddr) {
        self.inner.lock().unwrap().forwards.insert(port, addr);
    }

    pub fn get(&self, resource: &str, name: &str) -> Option<Value> {
        self.inner
            .lock()
            .unwrap()
            .objects
            .get(&(resource.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Names of the `resource` objects there are.
    pub fn names(&self, resource: &str) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        inner
            .objects
            .keys()
            .filter(|(r, _)| r == resource)
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// Every request so far, as "METHOD path".
    pub fn seen(&self) -> Vec<String> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// Runs `kubelet` for each pod when its Secret is created (a real kubelet cannot start the pod
    /// before then: its volumes come from the Secret), before the create is answered, and connects
    /// port-forwards to that pod's ports with what it returns.
    pub fn run_pods_with(&self, kubelet: impl Fn(&Value, &Value) -> Vec<(u16, SocketAddr)> + Send + Sync + 'static) {
        self.inner.lock().unwrap().kubelet = Some(Arc::new(kubelet));
    }

    /// Holds every port-forward to `port` of pod `pod` from now on: the request is taken (and in
    /// [`FakeApi::seen`]) but not answered until [`FakeApi::release_forwards`], as by an API server
    /// whose kubelet is slow to connect.
    pub fn hold_forwards(&self, pod: &str, port: u16) {
        self.inner.lock().unwrap().held.insert((pod.to_owned(), port));
    }

    /// Answers every held port-forward ([`FakeApi::hold_forwards`]) and holds none any more.
    pub fn release_forwards(&self) {
        self.inner.lock().unwrap().held.clear();
        self.changed.notify_waiters();
    }

    /// Runs `hook` with each `resource` object created from now on, before the create is answered
    /// (as a CSI driver or the snapshot controller would act on it).
    pub fn on_create(&self, resource: &str, hook: impl Fn(&Value) + Send + Sync + 'static) {
        self.inner
            .lock()
            .unwrap()
            .on_create
            .push((resource.to_owned(), Arc::new(hook)));
    }

    /// The cluster serves no `snapshot.storage.k8s.io/v1` (no CSI snapshot CRDs): its paths answer
    /// 404 as an API server's do for a group it does not serve.
    pub fn without_snapshot_api(&self) {
        self.inner.lock().unwrap().no_snapshot_api = true;
    }

    /// VolumeSnapshots created from now on get `status` (e.g. never ready).
    pub fn new_snapshots_get(&self, status: Value) {
        self.inner.lock().unwrap().new_snapshot_status = Some(status);
    }

    /// Pods created from now on get `status` instead of coming up ready.
    pub fn new_pods_get(&self, status: Value) {
        self.inner.lock().unwrap().new_pod_status = Some(status);
    }

    /// Replaces a pod's status, as a kubelet would (a MODIFIED event).
    pub fn set_pod_status(&self, name: &str, status: Value) {
        self.change("pods", name, |pod| pod["status"] = status);
    }

    /// Gives a pod its IP, as a kubelet does once the pod's network is up.
    pub fn set_pod_ip(&self, name: &str, ip: &str) {
        self.change("pods", name, |pod| pod["status"]["podIP"] = json!(ip));
    }

    /// Changes an object behind everyone's back (a MODIFIED event, a new resourceVersion).
    pub fn touch(&self, resource: &str, name: &str) {
        self.change(resource, name, |_| {});
    }

    fn change(&self, resource: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut inner = self.inner.lock().unwrap();
        let version = inner.version + 1;
        // Gone already (deleted while a kubelet was reporting on it): nothing to change.
        let Some(object) = inner.objects.get_mut(&(resource.to_owned(), name.to_owned())) else {
            return;
        };
        f(object);
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let object = object.clone();
        inner.version = version;
        inner.events.push((version, resource.to_owned(), "MODIFIED", object));
        drop(inner);
        self.changed.notify_waiters();
    }
}

async fn record(State(api): State<FakeApi>, request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let line = format!("{} {}", request.method(), request.uri().path());
    api.inner.lock().unwrap().seen.push(line);
    next.run(request).await
}

async fn collection(
    State(api): State<FakeApi>,
    method: Method,
    Path((_ns, resource)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Reply {
    let Some((api_version, kind)) = kind_of(&resource) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such resource");
    };
    let selector = query.get("labelSelector").map(String::as_str);
    match method {
        Method::POST => {
            let mut object: Value = match serde_json::from_slice(&body) {
                Ok(object) => object,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name is required");
            };
            let created = {
                let mut inner = api.inner.lock().unwrap();
                let key = (resource.clone(), name.clone());
                if inner.objects.contains_key(&key) {
                    Err(status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{resource} \"{name}\" already exists"),
                    ))
                } else {
                    inner.version += 1;
                    let version = inner.version;
                    object["apiVersion"] = json!(api_version);
                    object["kind"] = json!(kind);
                    object["metadata"]["uid"] = json!(format!("uid-{resource}-{name}"));
                    object["metadata"]["resourceVersion"] = json!(version.to_string());
                    object["metadata"]["creationTimestamp"] = json!("2026-12-03T07:00:00Z");
                    if resource == "pods" {
                        object["status"] = inner.new_pod_status.clone().unwrap_or_else(|| ready_status(&object));
                    }
                    if resource == "persistentvolumeclaims" {
                        object["status"] = json!({"phase": "Bound", "accessModes": object["spec"]["accessModes"],
                            "capacity": {"storage": object["spec"]["resources"]["requests"]["storage"]}});
                    }
                    if resource == "volumesnapshots" {
                        let status = inner
                            .new_snapshot_status
                            .clone()
                            .unwrap_or_else(|| snapshot_status(&inner, &object));
                        object["status"] = status;
                    }
                    inner.objects.insert(key, object.clone());
                    inner.events.push((version, resource.clone(), "ADDED", object.clone()));
                    let owner = object["metadata"]["ownerReferences"][0]["name"]
                        .as_str()
                        .unwrap_or_default();
                    let started = match (
                        &inner.kubelet,
                        inner.objects.get(&("pods".to_owned(), owner.to_owned())),
                    ) {
                        (Some(kubelet), Some(pod)) if resource == "secrets" => {
                            Some((kubelet.clone(), pod.clone(), object.clone()))
                        }
                        _ => None,
                    };
                    Ok(started)
                }
            };
            let started = match created {
                Ok(started) => started,
                Err(reply) => return reply,
            };
            let hooks: Vec<OnCreate> = {
                let inner = api.inner.lock().unwrap();
                inner
                    .on_create
                    .iter()
                    .filter(|(r, _)| *r == resource)
                    .map(|(_, h)| h.clone())
                    .collect()
            };
            for hook in hooks {
                let object = object.clone();
                tokio::task::spawn_blocking(move || hook(&object)).await.unwrap();
            }
            api.changed.notify_waiters();
            if let Some((kubelet, pod, secret)) = started {
                let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                let ports = tokio::task::spawn_blocking(move || kubelet(&pod, &secret))
                    .await
                    .unwrap();
                api.inner
                    .lock()
                    .unwrap()
                    .pod_forwards
                    .extend(ports.into_iter().map(|(port, addr)| ((name.clone(), port), addr)));
            }
            (StatusCode::CREATED, axum::Json(object)).into_response()
        }
        Method::GET if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let selector = selector.map(str::to_owned);
            watch(api, resource, since, selector)
        }
        Method::GET => {
            let inner = api.inner.lock().unwrap();
            // A page: at most `limit` items after the name `continue` holds (names are in order).
            let limit: usize = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let after = query.get("continue").map(String::as_str).unwrap_or_default();
            let mut items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|((r, name), object)| *r == resource && name.as_str() > after && matches(object, selector))
                .take(limit.saturating_add(1))
                .map(|(_, object)| object.clone())
                .collect();
            let mut metadata = json!({"resourceVersion": inner.version.to_string()});
            if items.len() > limit {
                items.truncate(limit);
                metadata["continue"] = items[limit - 1]["metadata"]["name"].clone();
            }
            let list = json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                              "metadata": metadata, "items": items});
            axum::Json(list).into_response()
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not here"),
    }
}

/// A new VolumeSnapshot's status, as the snapshot controller writes it: ready with its claim's
/// capacity, or failed when the claim does not exist.
fn snapshot_status(inner: &Inner, snapshot: &Value) -> Value {
    let claim = snapshot["spec"]["source"]["persistentVolumeClaimName"]
        .as_str()
        .unwrap_or_default();
    match inner
        .objects
        .get(&("persistentvolumeclaims".to_owned(), claim.to_owned()))
    {
        Some(claim) => json!({"readyToUse": true, "restoreSize": claim["status"]["capacity"]["storage"],
            "boundVolumeSnapshotContentName": format!("snapcontent-{}", snapshot["metadata"]["name"].as_str().unwrap_or_default()),
            "creationTime": "2026-12-03T07:00:00Z"}),
        None => json!({"readyToUse": false, "error": {"time": "2026-12-03T07:00:00Z",
            "message": format!("failed to get input parameters to create snapshot: persistentvolumeclaim \"{claim}\" not found")}}),
    }
}

/// What an API server answers for a path of a group it does not serve.
fn no_such_group() -> Reply {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// `GET /apis/snapshot.storage.k8s.io/v1`: the group's discovery document.
async fn snapshot_discovery(State(api): State<FakeApi>) -> Reply {
    if api.inner.lock().unwrap().no_snapshot_api {
        return no_such_group();
    }
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "snapshot.storage.k8s.io/v1",
        "resources": [
            {"name": "volumesnapshots", "singularName": "volumesnapshot", "namespaced": true, "kind": "VolumeSnapshot",
             "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"], "shortNames": ["vs"]},
            {"name": "volumesnapshots/status", "singularName": "", "namespaced": true, "kind": "VolumeSnapshot",
             "verbs": ["get", "patch", "update"]},
        ],
    }))
    .into_response()
}

async fn snapshot_collection(
    api: State<FakeApi>,
    method: Method,
    path: Path<(String, String)>,
    query: Query<HashMap<String, String>>,
    body: Bytes,
) -> Reply {
    if api.inner.lock().unwrap().no_snapshot_api || path.1 != "volumesnapshots" {
        return no_such_group();
    }
    collection(api, method, path, query, body).await
}

async fn snapshot_object(
    api: State<FakeApi>,
    method: Method,
    path: Path<(String, String, String)>,
    body: Bytes,
) -> Reply {
    if api.inner.lock().unwrap().no_snapshot_api || path.1 != "volumesnapshots" {
        return no_such_group();
    }
    object(api, method, path, body).await
}

/// A watch: newline-delimited events after `since`, then as they happen.
fn watch(api: FakeApi, resource: String, since: u64, selector: Option<String>) -> Reply {
    let stream = futures_util::stream::unfold(since, move |mut since| {
        let api = api.clone();
        let resource = resource.clone();
        let selector = selector.clone();
        async move {
            loop {
                let notified = api.changed.notified();
                let lines: Vec<u8> = {
                    let inner = api.inner.lock().unwrap();
                    let mut out = Vec::new();
                    for (version, r, kind, object) in &inner.events {
                        if *version > since && *r == resource && matches(object, selector.as_deref()) {
                            out.extend(serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap());
                            out.push(b'\n');
                        }
                    }
                    since = inner.version.max(since);
                    out
                };
                if !lines.is_empty() {
                    return Some((Ok::<_, Infallible>(Bytes::from(lines)), since));
                }
                notified.await;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn object(
    State(api): State<FakeApi>,
    method: Method,
    Path((_ns, resource, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Reply {
    if kind_of(&resource).is_none() {
        return status(StatusCode::NOT_FOUND, "NotFound", "no such resource");
    }
    let key = (resource.clone(), name.clone());
    let not_found = || {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{resource} \"{name}\" not found"),
        )
    };
    let mut inner = api.inner.lock().unwrap();
    match method {
        Method::GET => match inner.objects.get(&key) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => not_found(),
        },
        Method::PATCH => {
            let patch: Value = match serde_json::from_slice(&body) {
                Ok(patch) => patch,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let version = inner.version + 1;
            let Some(object) = inner.objects.get_mut(&key) else {
                return not_found();
            };
            if let Some(wanted) = patch["metadata"]["resourceVersion"].as_str()
                && object["metadata"]["resourceVersion"].as_str() != Some(wanted)
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified"),
                );
            }
            merge(object, &patch);
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            let object = object.clone();
            inner.version = version;
            inner.events.push((version, resource, "MODIFIED", object.clone()));
            drop(inner);
            api.changed.notify_waiters();
            axum::Json(object).into_response()
        }
        // The `kubernetes.io/pvc-protection` finalizer: a claim a pod still mounts is only marked
        // for deletion, and goes once no pod mounts it.
        Method::DELETE if resource == "persistentvolumeclaims" && mounted(&inner, &name) => {
            let version = inner.version + 1;
            let Some(object) = inner.objects.get_mut(&key) else {
                return not_found();
            };
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!("2026-12-03T07:00:00Z");
                object["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
                object["metadata"]["resourceVersion"] = json!(version.to_string());
                let object = object.clone();
                inner.version = version;
                inner.events.push((version, resource, "MODIFIED", object));
            }
            let object = inner.objects[&key].clone();
            drop(inner);
            api.changed.notify_waiters();
            axum::Json(object).into_response()
        }
        Method::DELETE => {
            let Some(object) = inner.objects.remove(&key) else {
                return not_found();
            };
            inner.version += 1;
            let version = inner.version;
            inner.events.push((version, resource, "DELETED", object.clone()));
            // The garbage collector: objects owned by the deleted one go too.
            let uid = object["metadata"]["uid"].clone();
            let owned: Vec<(String, String)> = inner
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["uid"] == uid)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in owned {
                let gone = inner.objects.remove(&key).unwrap();
                inner.version += 1;
                let version = inner.version;
                inner.events.push((version, key.0, "DELETED", gone));
            }
            // Claims marked for deletion that no pod mounts any more go now.
            let released: Vec<(String, String)> = inner
                .objects
                .iter()
                .filter(|((r, n), o)| {
                    r == "persistentvolumeclaims"
                        && !o["metadata"]["deletionTimestamp"].is_null()
                        && !mounted(&inner, n)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in released {
                let gone = inner.objects.remove(&key).unwrap();
                inner.version += 1;
                let version = inner.version;
                inner.events.push((version, key.0, "DELETED", gone));
            }
            drop(inner);
            api.changed.notify_waiters();
            axum::Json(object).into_response()
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not here"),
    }
}

/// Whether a pod mounts claim `claim`.
fn mounted(inner: &Inner, claim: &str) -> bool {
    inner.objects.iter().any(|((r, _), pod)| {
        r == "pods"
            && pod["spec"]["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(claim))
    })
}

async fn portforward(
    State(api): State<FakeApi>,
    Path((_ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Reply {
    let port: u16 = match query.get("ports").and_then(|p| p.parse().ok()) {
        Some(port) => port,
        None => return status(StatusCode::BAD_REQUEST, "BadRequest", "one port, please"),
    };
    loop {
        let released = api.changed.notified();
        if !api.inner.lock().unwrap().held.contains(&(name.clone(), port)) {
            break;
        }
        released.await;
    }
    let target = {
        let inner = api.inner.lock().unwrap();
        if !inner.objects.contains_key(&("pods".to_owned(), name.clone())) {
            return status(StatusCode::NOT_FOUND, "NotFound", &format!("pods \"{name}\" not found"));
        }
        inner
            .pod_forwards
            .get(&(name.clone(), port))
            .or_else(|| inner.forwards.get(&port))
            .copied()
    };
    upgrade
        .protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| forward(socket, port, target))
}

/// One forwarded port over the v4 channel protocol: channel 0 is data, 1 is errors; each starts
/// with the port number (little-endian), then frames are `[channel, bytes…]`.
async fn forward(mut socket: WebSocket, port: u16, target: Option<SocketAddr>) {
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if socket
            .send(Message::Binary(vec![channel, lo, hi].into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let connected = match target {
        Some(addr) => tokio::net::TcpStream::connect(addr).await.ok(),
        None => None,
    };
    let Some(tcp) = connected else {
        let mut frame = vec![1u8];
        frame.extend_from_slice(format!("nothing listens on port {port}").as_bytes());
        let _ = socket.send(Message::Binary(frame.into())).await;
        let _ = socket.close().await;
        return;
    };
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let (mut ws_send, mut ws_recv) = socket.split();
    let up = async move {
        while let Some(Ok(message)) = ws_recv.next().await {
            match message {
                Message::Binary(data) if data.first() == Some(&0) && tcp_write.write_all(&data[1..]).await.is_err() => {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = tcp_write.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match tcp_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buf[..n]);
                    if ws_send.send(Message::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = ws_send.close().await;
    };
    tokio::join!(up, down);
}
