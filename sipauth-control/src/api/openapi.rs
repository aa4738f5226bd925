//! `GET /v1/openapi.json`, written from the same field declarations that
//! validate requests.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::{acl, application, call, credential, endpoint};
use crate::ControlState;
use crate::fields::{Field, schema};

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static [Field]>,
    ok: u16,
    list: bool,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static [Field]>,
    ok: u16,
) -> Op {
    Op {
        method,
        path,
        summary,
        body,
        ok,
        list: false,
    }
}

const fn list(path: &'static str, summary: &'static str) -> Op {
    Op {
        method: "get",
        path,
        summary,
        body: None,
        ok: 200,
        list: true,
    }
}

const CRED: &str = "/v1/Account/{auth_id}/SipAuth/Credential/";
const CRED_ONE: &str = "/v1/Account/{auth_id}/SipAuth/Credential/{credential_uuid}/";
const ACL: &str = "/v1/Account/{auth_id}/SipAuth/IpAccessControlList/";
const ACL_ONE: &str = "/v1/Account/{auth_id}/SipAuth/IpAccessControlList/{ip_acl_uuid}/";
const ENTRY: &str = "/v1/Account/{auth_id}/SipAuth/IpAccessControlList/{ip_acl_uuid}/Entry/";
const ENTRY_ONE: &str =
    "/v1/Account/{auth_id}/SipAuth/IpAccessControlList/{ip_acl_uuid}/Entry/{entry_uuid}/";
const APP: &str = "/v1/Account/{auth_id}/Application/";
const APP_ONE: &str = "/v1/Account/{auth_id}/Application/{app_id}/";
const EP: &str = "/v1/Account/{auth_id}/Endpoint/";
const EP_ONE: &str = "/v1/Account/{auth_id}/Endpoint/{endpoint_id}/";
const CALL: &str = "/v1/Account/{auth_id}/Call/";
const CALL_ONE: &str = "/v1/Account/{auth_id}/Call/{call_uuid}/";

const OPS: &[Op] = &[
    op(
        "post",
        CRED,
        "Create a SIP credential",
        Some(credential::CREATE),
        201,
    ),
    list(CRED, "List SIP credentials"),
    op(
        "get",
        CRED_ONE,
        "Get a SIP credential (never the password or a hash)",
        None,
        200,
    ),
    op(
        "post",
        CRED_ONE,
        "Rotate a credential's password",
        Some(credential::UPDATE),
        202,
    ),
    op(
        "delete",
        CRED_ONE,
        "Delete a credential (400 while an application uses it)",
        None,
        204,
    ),
    op("post", ACL, "Create an IP ACL", Some(acl::CREATE), 201),
    list(ACL, "List IP ACLs"),
    op("get", ACL_ONE, "Get an IP ACL with its entries", None, 200),
    op("post", ACL_ONE, "Rename an IP ACL", Some(acl::UPDATE), 202),
    op(
        "delete",
        ACL_ONE,
        "Delete an IP ACL (400 while an application uses it)",
        None,
        204,
    ),
    op(
        "post",
        ENTRY,
        "Add an entry to an IP ACL",
        Some(acl::ENTRY_CREATE),
        201,
    ),
    list(ENTRY, "List the entries of an IP ACL"),
    op("get", ENTRY_ONE, "Get an IP ACL entry", None, 200),
    op(
        "post",
        ENTRY_ONE,
        "Change an IP ACL entry",
        Some(acl::ENTRY_UPDATE),
        202,
    ),
    op("delete", ENTRY_ONE, "Delete an IP ACL entry", None, 204),
    op(
        "post",
        APP,
        "Create an application",
        Some(application::CREATE),
        201,
    ),
    list(APP, "List applications"),
    op("get", APP_ONE, "Get an application", None, 200),
    op(
        "post",
        APP_ONE,
        "Change an application",
        Some(application::UPDATE),
        202,
    ),
    op("delete", APP_ONE, "Delete an application", None, 204),
    op(
        "post",
        EP,
        "Create a SIP endpoint",
        Some(endpoint::CREATE),
        201,
    ),
    list(EP, "List SIP endpoints"),
    op("get", EP_ONE, "Get a SIP endpoint", None, 200),
    op(
        "post",
        EP_ONE,
        "Change a SIP endpoint",
        Some(endpoint::UPDATE),
        202,
    ),
    op("delete", EP_ONE, "Delete a SIP endpoint", None, 204),
    op("post", CALL, "Make a call", Some(call::CREATE), 201),
    op("get", CALL_ONE, "Get a call record", None, 200),
];

fn request_body(fields: &[Field]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields {
        props.insert(f.name.to_owned(), schema(f));
        if f.required {
            required.push(f.name);
        }
    }
    let mut s = json!({ "type": "object", "properties": props });
    // OpenAPI 3.0 (JSON Schema draft 4's `required`) wants at least one
    // name when the keyword is there.
    if !required.is_empty() {
        s["required"] = json!(required);
    }
    json!({
        "required": true,
        "content": {
            "application/json": { "schema": s },
            "application/x-www-form-urlencoded": { "schema": s },
        }
    })
}

fn parameters(path: &str, list: bool) -> Vec<Value> {
    let mut p: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if list {
        p.push(json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 20, "default": 20 } }));
        p.push(json!({ "name": "offset", "in": "query", "schema": { "type": "integer", "minimum": 0, "default": 0 } }));
        if path == APP {
            p.push(json!({ "name": "app_name", "in": "query", "description": "Only the applications of this name", "schema": { "type": "string" } }));
        }
    }
    p
}

/// The whole document.
#[must_use]
pub fn document() -> Value {
    let answer = |name: &str| json!({ "$ref": format!("#/components/responses/{name}") });
    let mut paths = Map::new();
    for o in OPS {
        let mut responses = Map::new();
        let ok = if o.ok == 204 {
            json!({ "description": "done" })
        } else {
            json!({ "description": "success", "content": { "application/json": { "schema": { "type": "object", "required": ["api_id"] } } } })
        };
        responses.insert(o.ok.to_string(), ok);
        for code in ["400", "401", "404", "500"] {
            responses.insert(code.to_owned(), answer("Error"));
        }
        responses.insert("429".to_owned(), answer("TooManyRequests"));
        if o.body.is_some() {
            responses.insert("415".to_owned(), answer("UnsupportedMediaType"));
        }
        if o.path == CALL && o.method == "post" {
            responses.insert("503".to_owned(), answer("Error"));
        }
        let mut operation = json!({
            "summary": o.summary,
            "parameters": parameters(o.path, o.list),
            "responses": responses,
        });
        if let Some(fields) = o.body {
            operation["requestBody"] = request_body(fields);
        }
        paths
            .entry(o.path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item")
            .insert(o.method.to_owned(), operation);
    }
    let error_body =
        json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } });
    json!({
        "openapi": "3.0.3",
        "info": { "title": "sipauth API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "SIP credentials, IP ACLs, applications, endpoints and calls. Trailing slashes are optional. \
                  Every error answer, also 404 for an unknown path and 405 for a method a path does not take, \
                  is JSON: {\"api_id\": \"...\", \"error\": \"...\"}." },
        "servers": [{ "url": "/" }],
        "security": [{ "basic": [] }],
        "components": {
            "securitySchemes": { "basic": { "type": "http", "scheme": "basic" } },
            "schemas": { "Error": { "type": "object", "required": ["api_id", "error"],
                "properties": { "api_id": { "type": "string" }, "error": { "type": "string" } } } },
            "responses": {
                "Error": { "description": "error", "content": error_body.clone() },
                "TooManyRequests": {
                    "description": "too many failed authentications from this address",
                    "headers": { "Retry-After": {
                        "description": "seconds until the address is let in again",
                        "schema": { "type": "integer", "minimum": 1 } } },
                    "content": error_body.clone(),
                },
                "UnsupportedMediaType": {
                    "description": format!("the body is neither of {}", super::ACCEPTED_TYPES),
                    "headers": { "Accept-Post": {
                        "description": "the media types accepted",
                        "schema": { "type": "string" } } },
                    "content": error_body,
                },
            }
        },
        "paths": paths,
    })
}

pub async fn serve(State(_): State<Arc<ControlState>>) -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_body_field_has_a_schema() {
        let d = super::document();
        let p = &d["paths"]["/v1/Account/{auth_id}/SipAuth/IpAccessControlList/{ip_acl_uuid}/Entry/"]
            ["post"];
        let s = &p["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(s["required"], serde_json::json!(["ip"]));
        assert_eq!(s["properties"]["cidr_prefix"]["maximum"], 128);
        assert_eq!(d["paths"].as_object().unwrap().len(), 12);
    }

    /// Where `"required": []` is, which OpenAPI 3.0 forbids.
    fn empty_required(v: &serde_json::Value, at: &str, found: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "required" && v.as_array().is_some_and(Vec::is_empty) {
                        found.push(at.to_owned());
                    }
                    empty_required(v, &format!("{at}/{k}"), found);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    empty_required(v, &format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn no_empty_required_lists() {
        let d = super::document();
        let mut found = Vec::new();
        empty_required(&d, "", &mut found);
        assert!(found.is_empty(), "{found:?}");
        // An update whose fields are all optional says none is required.
        let s = &d["paths"]["/v1/Account/{auth_id}/Application/{app_id}/"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert!(s["properties"]["app_name"].is_object(), "{s}");
        assert!(s.get("required").is_none(), "{s}");
    }

    #[test]
    fn error_answers_are_described() {
        let d = super::document();
        let call = &d["paths"]["/v1/Account/{auth_id}/Call/"]["post"]["responses"];
        for code in ["400", "401", "404", "415", "429", "500", "503"] {
            assert!(call[code]["$ref"].is_string(), "{code}: {call}");
        }
        let get = &d["paths"]["/v1/Account/{auth_id}/Call/{call_uuid}/"]["get"]["responses"];
        assert!(
            get.get("415").is_none() && get.get("503").is_none(),
            "{get}"
        );
        let r = &d["components"]["responses"];
        assert_eq!(
            r["TooManyRequests"]["headers"]["Retry-After"]["schema"]["type"],
            "integer"
        );
        assert!(r["UnsupportedMediaType"]["headers"]["Accept-Post"].is_object());
    }
}
