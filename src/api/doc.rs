//! The last pass over the OpenAPI document: the error answers that whole kinds of operations share,
//! written once here instead of on every handler, so that no status the server sends is left out.
//!
//! - an operation that takes the master key answers 401 without it;
//! - an operation with a JSON body answers 400 for malformed JSON or a field of the wrong type, 413
//!   for a body over the limit and 415 for a body without `Content-Type: application/json`;
//! - an operation with query parameters answers 400 for a query string that does not parse;
//! - an operation on a session reaches the sandbox backend, which answers 503 when it cannot do
//!   that (`--backend fake` keeps no files, a backend that is down).
//!
//! Operation ids are the handler's name prefixed with its tag (`agents_list`, `sessions_list`), so
//! that each is unique, as OpenAPI requires and SDK generators rely on. It also lists the harness ids (from the catalog in `tools.rs`) as the enum of `harness_id`.
//!
//! Each is added only where the handler's own annotation does not already name that status, so a
//! handler can still describe its own 400s. `tests/it/openapi_schemathesis.rs` holds the document to
//! what the server does.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// What `env` and credential names match (`is_env_name` in `api/agents.rs`).
const ENV_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// Adds the shared error answers to every operation of `doc`.
pub fn complete(doc: &mut OpenApi) {
    let master_key = SecurityRequirement::new("master_key", Vec::<String>::new());
    for (path, item) in doc.paths.paths.iter_mut() {
        let on_a_session = path.starts_with("/api/v1/managed_agents/sessions/{id}")
            || path.ends_with("/session")
            || path.ends_with("/snapshots");
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            complete_operation(operation, &master_key);
            prefix_operation_id(operation);
            if on_a_session {
                add_error(operation, "503", "the sandbox backend cannot do this now");
            }
        }
    }
    for body in ["CreateAgent", "UpdateAgent"] {
        list_harnesses(doc, body);
        for map in ["env", "env_vars"] {
            name_keys(doc, body, map);
        }
    }
}

/// `list` of the `agents` tag becomes `agents_list`.
fn prefix_operation_id(operation: &mut Operation) {
    let tag = operation.tags.as_ref().and_then(|tags| tags.first());
    if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut())
        && !id.starts_with(&format!("{tag}_"))
    {
        *id = format!("{tag}_{id}");
    }
}

/// The keys of the map `field` of the schema `name` are environment variable names.
fn name_keys(doc: &mut OpenApi, name: &str, field: &str) {
    let Some(RefOr::T(Schema::Object(body))) = doc.components.as_mut().and_then(|c| c.schemas.get_mut(name)) else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(map))) = body.properties.get_mut(field) {
        let names = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ENV_NAME))
            .build();
        map.property_names = Some(Box::new(Schema::Object(names)));
    }
}

/// `harness_id` of the schema `name` takes the catalog's ids (or null: the default, or no change).
fn list_harnesses(doc: &mut OpenApi, name: &str) {
    let Some(RefOr::T(Schema::Object(body))) = doc.components.as_mut().and_then(|c| c.schemas.get_mut(name)) else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(field))) = body.properties.get_mut("harness_id") {
        let mut ids: Vec<serde_json::Value> = crate::tools::CATALOG.iter().map(|h| h.id.into()).collect();
        ids.push(serde_json::Value::Null);
        field.enum_values = Some(ids);
    }
}

fn complete_operation(operation: &mut Operation, master_key: &SecurityRequirement) {
    if operation
        .security
        .as_ref()
        .is_some_and(|requirements| requirements.contains(master_key))
    {
        add_error(operation, "401", "no master key, or a wrong one");
    }
    let json_body = operation.request_body.as_ref().is_some_and(|body| match body {
        RefOr::T(body) => body.content.contains_key("application/json"),
        RefOr::Ref(_) => true,
    });
    if json_body {
        add_error(
            operation,
            "400",
            "malformed JSON, an unknown field or a field of the wrong type",
        );
        add_error(operation, "413", "the body is larger than the server takes");
        add_error(
            operation,
            "415",
            "the body was sent without `Content-Type: application/json`",
        );
    }
    let has_query = operation.parameters.iter().flatten().any(|parameter| match parameter {
        RefOr::T(parameter) => parameter.parameter_in == ParameterIn::Query,
        RefOr::Ref(_) => false,
    });
    if has_query {
        add_error(operation, "400", "a query parameter that does not parse");
    }
}

/// Adds `status` with the error envelope, unless the operation documents that status already.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let responses = &mut operation.responses.responses;
    if responses.contains_key(status) {
        return;
    }
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .build();
    responses.insert(status.to_owned(), RefOr::T(response));
}
