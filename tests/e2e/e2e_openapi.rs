//! The OpenAPI document: valid OpenAPI 3.1, served as committed, and describing exactly the
//! routes the service has. (Every answer in the suite is also checked against it.)

use hookbridge_e2e::openapi::Spec;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack};

#[test]
fn the_document_is_valid_openapi_3_1() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(root.join(".venv/bin/python"))
        .args(["-m", "openapi_spec_validator"])
        .arg(root.join("crates/subscription-api/openapi.json"))
        .output()
        .expect("run openapi-spec-validator from .venv (make test installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(Spec::get().doc()["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_is_served_and_names_exactly_the_routes_the_service_has() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let served = stack.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(served.status, 200);
    assert_eq!(&served.body, Spec::get().doc());

    let t = stack.token("acme", ALL_SCOPES);
    let id = "01KAKSAMP4E000000000H00K01";
    for (template, item) in Spec::get().doc()["paths"].as_object().unwrap() {
        let path = template
            .replace("{id}", id)
            .replace("{delivery_id}", id)
            .replace("{sid}", id)
            .replace("{realm}", "acme")
            .replace("{name}", "user.login");
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let documented = item.get(method.to_lowercase()).is_some();
            let a = stack.raw(method, &path, &[("authorization", &format!("Bearer {t}"))], Vec::new()).await;
            if documented {
                assert!(
                    a.status != 405 && !(a.status == 404 && a.body["detail"] == "no such route"),
                    "{method} {template}: {}",
                    a.status
                );
            } else {
                assert_eq!(a.status, 405, "{method} {template} answers although it is not documented");
            }
        }
    }
    stack.shutdown().await;
}

/// Every operation behind a token names the scope it needs (`x-required-scope`), and it is
/// the one the route checks: a token with every other scope is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_names_the_scope_its_route_checks() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let doc = Spec::get().doc();
    let id = "01KAKSAMP4E000000000H00K01";
    let every = ["hooks:read", "hooks:write", "events:publish", "portal:create"];
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let Some(security) = op.get("security").or(doc.get("security")) else { continue };
            if security.as_array().is_none_or(|s| s.iter().all(|x| x.as_object().is_none_or(|o| o.is_empty()))) {
                continue;
            }
            let scope = op["x-required-scope"].as_str().unwrap_or_else(|| panic!("{method} {template} names no scope"));
            assert!(every.contains(&scope), "{method} {template}: unknown scope {scope}");
            let others = every.iter().filter(|s| **s != scope).copied().collect::<Vec<_>>().join(" ");
            let t = stack.token("acme", &others);
            let path = template
                .replace("{id}", id)
                .replace("{delivery_id}", id)
                .replace("{replay_id}", id)
                .replace("{sid}", id)
                .replace("{realm}", "acme")
                .replace("{catalog}", "hypr")
                .replace("{name}", "user.login");
            let headers = [("authorization", format!("Bearer {t}")), ("content-type", "application/json".into())];
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let a = stack.raw(&method.to_uppercase(), &path, &headers, b"{}".to_vec()).await;
            assert_eq!(a.status, 403, "{method} {template} without {scope}: {}", a.body);
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} operations checked");
    stack.shutdown().await;
}
