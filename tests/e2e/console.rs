//! The console in a real headless Chromium: sign in, create a hook of each auth type
//! against a real receiver, verify it, send a test, publish and read the delivery with its
//! attempts, retry it, replay a window, follow replays and cancel one, rotate the secret, disable and enable, delete; a read-only session;
//! the phone width; portal links (once, expiring, one tenant); forged forms and sign-ins posted from another origin refused; and a smoke pass on the AWS
//! backend. Its own binary: it owns the browser. With `HOOKBRIDGE_SCREENSHOTS=docs/console`
//! it saves the screenshots the README shows.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use hookbridge_e2e::browser::Browser;
use hookbridge_e2e::{ALL_SCOPES, Flavor, TestStack};
use hookbridge_testkit::{Receiver, Reply};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn sign_in(b: &Browser, token: &str) {
    b.goto("/console").await;
    assert_eq!(b.path().await, "/console/login");
    b.fill("token", token).await;
    b.press("Sign in").await;
    b.find("h1").await;
    assert_eq!(b.path().await, "/console/hooks");
}

/// Fills the New hook form and submits it; the page it lands on.
async fn create_hook(b: &Browser, name: &str, url: &str, auth: &[(&str, &str)]) {
    b.goto("/console/hooks/new").await;
    b.fill("name", name).await;
    b.fill("url", url).await;
    b.fill("event_types", "user.*\naccess.*").await;
    for (field, value) in auth {
        if *field == "auth.type" {
            b.choose(field, value).await;
        } else {
            b.fill(field, value).await;
        }
    }
    b.press("Create hook").await;
}

/// The text of each row of a hook page's Replays table, newest first.
async fn replay_rows(b: &Browser) -> Vec<String> {
    let mut rows = Vec::new();
    for r in b.all("tr.replay").await {
        rows.push(r.text().await.unwrap_or_default());
    }
    rows
}

/// A replay job of `hook` stored as running and never poked: it runs until cancelled.
async fn running_replay(stack: &TestStack, hook: &str) -> String {
    use hookbridge_core::replay::ReplayJob;
    let now = chrono::Utc::now();
    let job = ReplayJob::new(
        "acme".parse().unwrap(),
        hook.parse().unwrap(),
        now - chrono::Duration::hours(1),
        now,
        None,
        now,
    );
    stack.stack().backend().replays.create(&job).await.unwrap();
    job.id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_runs_every_hook_screen_in_a_browser() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let t = stack.token("acme", ALL_SCOPES);
    let r = Receiver::start().await;
    r.always(Reply::EchoChallenge { header: "x-uid-challenge".into() });
    let idp = Receiver::start().await;
    idp.always(Reply::body(200, r#"{"access_token":"tok-from-idp","expires_in":600}"#));
    // Known event types for the live preview.
    assert_eq!(stack.post("/v1/event-types/catalogs/keycloak", &t, &json!({})).await.status, 200);

    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto("/console/hooks").await;
    assert_eq!(b.path().await, "/console/login", "signed out: to the sign-in page");
    b.screenshot("sign-in").await;
    b.fill("token", "not-a-token").await;
    b.press("Sign in").await;
    assert!(b.text().await.contains("not valid"), "a bad token says so");
    sign_in(&b, &t).await;
    assert!(b.text().await.contains("No hooks yet"), "the empty state says what to do");
    b.screenshot("hooks-empty").await;

    // A field the API refuses is shown at the field it names.
    create_hook(&b, "bad one", "ftp://nowhere", &[]).await;
    let errors = b.all(".field.invalid").await;
    assert!(errors.len() >= 2, "name and url are both marked");
    assert!(b.find("#err-url").await.text().await.unwrap().contains("http"));
    b.screenshot("new-hook-errors").await;

    // One hook of each auth type, against the real receiver.
    let hooks: [(&str, Vec<(&str, String)>); 5] = [
        ("none", vec![]),
        (
            "basic",
            vec![("auth.type", "BASIC".into()), ("auth.username", "ada".into()), ("auth.password", "pw-1".into())],
        ),
        (
            "apikey",
            vec![("auth.type", "API_KEY".into()), ("auth.key_name", "main".into()), ("auth.key_value", "key-1".into())],
        ),
        (
            "header",
            vec![("auth.type", "HEADER".into()), ("auth.name", "X-Auth-Token".into()), ("auth.value", "hdr-1".into())],
        ),
        (
            "oauth",
            vec![
                ("auth.type", "OAUTH_CLIENT_CREDENTIALS".into()),
                ("auth.token_url", idp.url("/token")),
                ("auth.client_id", "cid".into()),
                ("auth.client_secret", "cs-1".into()),
            ],
        ),
    ];
    for (name, auth) in &hooks {
        let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if *name == "header" {
            // The live preview, before submitting: Keycloak's access.* types are known.
            b.goto("/console/hooks/new").await;
            b.fill("event_types", "access.LOGIN*").await;
            // The page asks for the preview a moment after the last keystroke.
            let mut preview = String::new();
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                preview = b.find("#preview").await.text().await.unwrap();
                if preview.contains("access.LOGIN_ERROR") {
                    break;
                }
            }
            assert!(preview.contains("access.LOGIN") && preview.contains("access.LOGIN_ERROR"), "{preview}");
            // The tenant's event types, at a URL every tenant shares: no cache keeps them.
            let cache = b.fetched_header("/console/preview?pattern=*", "cache-control").await;
            assert_eq!(cache.as_deref(), Some("no-store"));
            b.screenshot("new-hook").await;
        }
        create_hook(&b, name, &r.url(&format!("/{name}")), &auth).await;
        assert!(b.text().await.contains("Hook created"), "{name}: {}", b.text().await);
        let secret = b.find("#secret").await.prop("value").await.unwrap().unwrap_or_default();
        assert!(secret.starts_with("whsec_"), "the secret is shown once");
        if *name == "none" {
            b.screenshot("secret").await;
        }
    }
    // A double click on Create posts once: a second post would be refused as the name
    // taken, and its page, not the one with the secret, would be the one shown.
    b.goto("/console/hooks/new").await;
    b.fill("name", "twice").await;
    b.fill("url", &r.url("/twice")).await;
    b.run(
        "const s = document.querySelector('form.hook button[type=submit]'); s.click(); setTimeout(() => s.click(), 0);",
    )
    .await;
    b.until("the answer", |t| t.contains("Hook created") || t.contains("already")).await;
    assert!(b.text().await.contains("Hook created"), "{}", b.text().await);
    let twice = stack.get("/v1/hooks", &t).await.body["hooks"].clone();
    assert_eq!(twice.as_array().unwrap().iter().filter(|h| h["name"] == "twice").count(), 1);
    assert_eq!(
        stack
            .delete(
                &format!(
                    "/v1/hooks/{}",
                    twice.as_array().unwrap().iter().find(|h| h["name"] == "twice").unwrap()["id"].as_str().unwrap()
                ),
                &t
            )
            .await
            .status,
        204
    );
    b.goto("/console/hooks").await;
    assert_eq!(b.all("tbody tr").await.len(), 5);
    let table = b.text().await;
    for auth in ["NONE", "BASIC", "API_KEY", "HEADER", "OAUTH_CLIENT_CREDENTIALS"] {
        assert!(table.contains(auth), "the table shows {auth}");
    }
    b.screenshot("hooks").await;
    b.goto("/console/hooks?name=bas").await;
    assert_eq!(b.all("tbody tr").await.len(), 1, "filtered by name");

    // The basic hook's page: Verify, then Send test.
    b.goto("/console/hooks").await;
    b.click("a[href^='/console/hooks/0'], a[href^='/console/hooks/1']").await;
    let hooks_list = stack.get("/v1/hooks", &t).await.body;
    let basic_id = hooks_list["hooks"].as_array().unwrap().iter().find(|h| h["name"] == "basic").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.goto(&format!("/console/hooks/{basic_id}")).await;
    b.press("Verify").await;
    assert!(b.text().await.contains("ownership challenge is on its way"));
    b.until("VERIFIED", |t| t.contains("VERIFIED")).await;
    b.screenshot("hook").await;
    b.press("Send test").await;
    b.until("the test's attempt", |t| t.contains("SUCCEEDED")).await;
    let page = b.text().await;
    assert!(
        page.contains("authorization") && page.contains("Basic •••• (base64 of ada:<password>)"),
        "the headers sent as they go, secrets masked"
    );
    assert!(page.contains(hookbridge_outbound::USER_AGENT), "the default User-Agent is listed: {page}");
    assert!(page.contains("webhook-signature"));
    assert!(page.contains("As the hook sends it now"), "not passed off as what an older attempt sent");
    assert_eq!(b.all("tr.attempt").await.len(), 1);
    b.screenshot("test-delivery").await;
    let got = r.wait_for(2, WAIT).await;
    assert!(got.iter().any(|g| g.header("authorization").is_some_and(|a| a.starts_with("Basic "))));

    // A published event, under Read with its attempt; then retried from its page.
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {"user": "ada"}})).await;
    b.goto(&format!("/console/hooks/{basic_id}/read")).await;
    b.until("the delivery under Read", |t| t.contains("user.login") && t.contains("SUCCEEDED")).await;
    b.screenshot("read").await;
    let link = b.all("td a[href*='/deliveries/']").await;
    let mut opened = false;
    for l in link {
        if l.text().await.is_ok() {
            let href = l.attr("href").await.unwrap().unwrap();
            let d = stack.get(&format!("/v1{}", href.trim_start_matches("/console")), &t).await;
            if d.body["event_type"] == "user.login" {
                b.goto(&href).await;
                opened = true;
                break;
            }
        }
    }
    assert!(opened, "the published event's delivery is listed");
    let before = r.received().len();
    b.press("Retry").await;
    b.until("the retry's attempt", |t| t.matches("200").count() >= 2).await;
    assert!(r.received().len() > before, "the receiver got it again");

    // Replay from Read: the job shows on the hook's page, and runs to its end there. With
    // every status unticked it is refused, not started for FAILED (what none means to the API).
    b.goto(&format!("/console/hooks/{basic_id}/read")).await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
    b.run(&format!(
        "document.querySelector('[name=since]').value = '{since}'; document.querySelectorAll('[name=status]').forEach(c => c.checked = false)"
    ))
    .await;
    b.press("Replay").await;
    assert!(b.text().await.contains("must list at least one status"), "{}", b.text().await);
    assert_eq!(
        stack.get(&format!("/v1/hooks/{basic_id}/replays"), &t).await.body["replays"],
        json!([]),
        "no job started"
    );
    // The refusal shows the form again as it was filled in: the window typed is kept.
    let kept = b.find("form.replay [name=since]").await.prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some(since.to_string().as_str()));
    let statuses = b.all("form.replay [name=status]").await;
    assert_eq!(statuses.len(), 3, "a box for each final status");
    for status in statuses {
        assert_eq!(status.prop("checked").await.unwrap().as_deref(), Some("false"), "none was ticked");
    }
    b.run("document.querySelectorAll('[name=status]').forEach(c => c.checked = c.value !== 'SUCCEEDED')").await;
    b.press("Replay").await;
    assert!(b.text().await.contains("Replay started"), "{}", b.text().await);
    let mut rows = Vec::new();
    for _ in 0..150 {
        rows = replay_rows(&b).await;
        if rows.first().is_some_and(|r| r.contains("SUCCEEDED")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.client.refresh().await.unwrap();
    }
    assert!(rows.len() == 1 && rows[0].contains("SUCCEEDED"), "{rows:?}");
    // A job still running has a Cancel button (this one has no poke, so it runs until then).
    let running = running_replay(&stack, &basic_id).await;
    b.goto(&format!("/console/hooks/{basic_id}")).await;
    let rows = replay_rows(&b).await;
    assert!(rows.len() == 2 && rows[0].contains("RUNNING") && rows[1].contains("SUCCEEDED"), "newest first: {rows:?}");
    assert_eq!(b.all("form[action$='/cancel']").await.len(), 1, "only the running job can be cancelled");
    b.press("Cancel replay").await;
    assert!(b.text().await.contains("Replay cancelled"), "{}", b.text().await);
    assert!(replay_rows(&b).await[0].contains("CANCELLED"));
    assert!(b.all("form[action$='/cancel']").await.is_empty());
    let job = stack.get(&format!("/v1/hooks/{basic_id}/replays/{running}"), &t).await;
    assert_eq!(job.body["state"], "CANCELLED", "{}", job.body);

    // Rotate: the new secret, once.
    b.goto(&format!("/console/hooks/{basic_id}")).await;
    b.press("Rotate secret").await;
    assert!(b.find("#secret").await.prop("value").await.unwrap().unwrap_or_default().starts_with("whsec_"));
    assert!(b.text().await.contains("keeps signing too until"));
    assert!(!b.text().await.contains("X-Keycloak-Signature"), "the hook does not send it");
    // X-Keycloak-Signature is one signature, with the current secret: the page says so.
    let mut doc = stack.get(&format!("/v1/hooks/{basic_id}"), &t).await.body;
    doc["signature_formats"] = json!(["standard-webhooks", "keycloak"]);
    assert_eq!(stack.put(&format!("/v1/hooks/{basic_id}"), &t, &doc).await.status, 200);
    b.goto(&format!("/console/hooks/{basic_id}")).await;
    b.press("Rotate secret").await;
    assert!(
        b.text().await.contains("X-Keycloak-Signature is made with the new secret from now on"),
        "{}",
        b.text().await
    );

    // Disable, enable; edit keeps the stored password (left blank).
    b.goto(&format!("/console/hooks/{basic_id}")).await;
    b.press("Disable").await;
    assert!(b.text().await.contains("INACTIVE"));
    b.press("Enable").await;
    assert!(b.text().await.contains("Enabled: deliveries resume"));
    b.goto(&format!("/console/hooks/{basic_id}/edit")).await;
    assert_eq!(
        b.find("#name").await.attr("readonly").await.unwrap().as_deref(),
        Some("true"),
        "the name cannot change"
    );
    b.fill("description", "forwards sign-ins").await;
    b.press("Save").await;
    assert!(b.text().await.contains("Saved."), "{}", b.text().await);
    b.screenshot("edit-saved").await;
    // Someone changes the hook while the form is open: saving it does not undo that.
    b.goto(&format!("/console/hooks/{basic_id}/edit")).await;
    let mut theirs = stack.get(&format!("/v1/hooks/{basic_id}"), &t).await.body;
    theirs["description"] = json!("changed through the API");
    assert_eq!(stack.put(&format!("/v1/hooks/{basic_id}"), &t, &theirs).await.status, 200);
    b.fill("description", "changed in the console").await;
    b.press("Save").await;
    assert!(b.text().await.contains("read it again and retry"), "{}", b.text().await);
    let kept = stack.get(&format!("/v1/hooks/{basic_id}"), &t).await.body;
    assert_eq!(kept["description"], "changed through the API");

    // Delete, confirmed.
    b.goto(&format!("/console/hooks/{basic_id}")).await;
    b.press("Delete").await;
    assert!(b.text().await.contains("This cannot be undone"));
    b.screenshot("delete").await;
    b.press("Delete the hook").await;
    assert_eq!(b.path().await, "/console/hooks");
    assert_eq!(b.all("tbody tr").await.len(), 4);
    assert_eq!(stack.get(&format!("/v1/hooks/{basic_id}"), &t).await.status, 404);

    // The phone width: still every column, as cards.
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto("/console/hooks").await;
    b.screenshot("hooks-phone").await;
    b.close().await;

    // A read-only session sees no controls that change anything.
    let reader = Browser::start(stack.base_url(), 1280, 1000).await;
    sign_in(&reader, &stack.token("acme", "hooks:read")).await;
    let text = reader.text().await;
    assert!(text.contains("read-only") && !text.contains("New hook"));
    let any = stack.get("/v1/hooks", &t).await.body["hooks"][0]["id"].as_str().unwrap().to_owned();
    running_replay(&stack, &any).await;
    reader.goto(&format!("/console/hooks/{any}")).await;
    assert!(reader.all("form[action$='/verify']").await.is_empty() && !reader.text().await.contains("Edit"));
    assert!(replay_rows(&reader).await[0].contains("RUNNING"), "a reader sees the replays");
    assert!(reader.all("form[action$='/cancel']").await.is_empty(), "and cannot cancel one");
    // Nor a form that changes a hook, reached by its address: no form to type into and lose.
    for path in
        ["/console/hooks/new".to_owned(), format!("/console/hooks/{any}/edit"), format!("/console/hooks/{any}/delete")]
    {
        reader.goto(&path).await;
        assert!(reader.text().await.contains("This session is read-only"), "{path}");
        assert!(reader.all("form.hook, main form").await.is_empty(), "{path}");
    }
    reader.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_portal_link_opens_once_for_one_tenant_and_its_sites() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let hq = stack.create_hook(&t, &json!({"name": "hq-hook", "url": r.url("/hq"), "sites": ["hq"]})).await;
    let lab = stack.create_hook(&t, &json!({"name": "lab-hook", "url": r.url("/lab"), "sites": ["lab"]})).await;
    let other =
        stack.create_hook(&stack.token("globex", ALL_SCOPES), &json!({"name": "theirs", "url": r.url("/g")})).await;

    // Only a token with portal:create may make links.
    let plain = stack.post("/v1/portal/sessions", &t, &json!({})).await;
    assert_eq!(plain.status, 403);
    let maker = stack.token("acme", "portal:create");
    let link = stack.post("/v1/portal/sessions", &maker, &json!({"sites": ["hq"]})).await;
    assert_eq!(link.status, 201, "{}", link.body);
    let url = link.body["url"].as_str().unwrap().to_owned();
    let path = url.trim_start_matches(stack.base_url()).to_owned();
    // The code rides in the query: access logs write the path, and a logged code could be
    // redeemed by whoever reads them.
    assert!(path.starts_with("/console/portal?code="), "{url}");
    assert_eq!(reqwest::Url::parse(&url).unwrap().path(), "/console/portal");

    // Fetched by something that is not the person (a mail scanner, a chat preview): the
    // link is not spent by it.
    let fetched = reqwest::Client::new().get(&url).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.headers().get("set-cookie").is_none(), "a visit signs no one in");
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto(&path).await;
    b.press("Open the console").await;
    b.until("the hooks page", |t| t.contains("hq-hook")).await;
    let text = b.text().await;
    assert!(text.contains("hq-hook") && !text.contains("lab-hook") && !text.contains("theirs"), "{text}");
    b.screenshot("portal").await;
    // Another tenant's hook, and a hook of another site, are not there; the session's own is.
    for id in [other["id"].as_str().unwrap(), lab["id"].as_str().unwrap(), hq["id"].as_str().unwrap()] {
        b.goto(&format!("/console/hooks/{id}")).await;
        let page = b.text().await;
        if id == hq["id"] {
            assert!(page.contains("hq-hook"));
        } else {
            assert!(page.contains("no such hook"), "{page}");
        }
    }
    // A hook made here keeps to the session's sites: the form starts there, so one made
    // without touching the scope is made; one moved to the whole workspace is refused.
    b.goto("/console/hooks/new").await;
    b.fill("name", "made-here").await;
    b.fill("url", &r.url("/m")).await;
    b.press("Create hook").await;
    let made = stack.get("/v1/hooks", &t).await.body["hooks"].as_array().unwrap().clone();
    let made = made.iter().find(|h| h["name"] == "made-here").expect("made");
    assert_eq!(made["sites"], json!(["hq"]));
    b.goto("/console/hooks/new").await;
    b.fill("name", "outside").await;
    b.fill("url", &r.url("/o")).await;
    b.click("input[name=scope][value=workspace]").await;
    b.press("Create hook").await;
    assert!(b.find("#err-sites").await.text().await.unwrap().contains("hq"));
    b.close().await;

    // Once: the same link again is gone.
    let again = Browser::start(stack.base_url(), 1280, 1000).await;
    again.goto(&path).await;
    again.press("Open the console").await;
    assert!(again.text().await.contains("This link has expired"));
    // An expired one too.
    let short = stack.post("/v1/portal/sessions", &maker, &json!({"expires_in": 30, "read_only": true})).await;
    let code = short.body["url"].as_str().unwrap().rsplit('=').next().unwrap().to_owned();
    let grant = hookbridge_core::portal::PortalGrant {
        tenant: "acme".parse().unwrap(),
        sites: Vec::new(),
        read_only: true,
        expires_at: chrono::Utc::now() - chrono::Duration::seconds(1),
    };
    let stale = hookbridge_core::portal::fresh_code();
    stack.stack().backend().portal.put_link(&hookbridge_core::portal::hashed(&stale), &grant).await.unwrap();
    again.goto(&format!("/console/portal?code={stale}")).await;
    again.press("Open the console").await;
    assert!(again.text().await.contains("This link has expired"));
    // The code in the path (the links' old form) is no route: API Gateway's access log
    // writes paths, so a code sent that way would be logged before it was spent.
    assert_eq!(stack.raw("GET", &format!("/console/portal/{code}"), &[], Vec::new()).await.status, 404);
    // The read-only one works once, read-only.
    again.goto(&format!("/console/portal?code={code}")).await;
    again.press("Open the console").await;
    again.until("the hooks page", |t| t.contains("read-only")).await;
    assert!(!again.text().await.contains("New hook"));
    again.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forms_posted_from_elsewhere_change_nothing() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let t = stack.token("acme", ALL_SCOPES);
    let r = Receiver::start().await;
    let hook = stack.create_hook(&t, &json!({"name": "kept", "url": r.url("/kept")})).await;
    let id = hook["id"].as_str().unwrap();
    let b = Browser::start(stack.base_url(), 1280, 1000).await;

    // A page on another origin posting its own token to the sign-in form (login CSRF):
    // the browser would have been working in that tenant without knowing it.
    let elsewhere = Receiver::start().await;
    let theirs = stack.token("mallory", ALL_SCOPES);
    let form = format!(
        r#"<!doctype html><form method="post" action="{}/console/login"><input name="token" value="{theirs}"></form><script>document.forms[0].submit()</script>"#,
        stack.base_url()
    );
    elsewhere.always(Reply::body(200, form).with_header("content-type", "text/html"));
    b.visit(&elsewhere.url("/")).await;
    // The other page has no header; the console's answer has.
    b.find("header.top").await;
    assert!(b.text().await.contains("Sign in from the console's own sign-in page"), "{}", b.text().await);
    b.goto("/console/hooks").await;
    assert_eq!(b.path().await, "/console/login", "not signed in by the other page");

    // No session: every console page sends you to sign in, and the sign-in back to it.
    b.goto(&format!("/console/hooks/{id}")).await;
    assert_eq!(b.path().await, format!("/console/login?to=%2Fconsole%2Fhooks%2F{id}"));

    sign_in(&b, &t).await;
    b.goto(&format!("/console/hooks/{id}/delete")).await;
    // What a page on another site would post: the right form, a token it cannot know.
    b.run("document.querySelectorAll('input[name=\"_csrf\"]').forEach(i => i.value = 'forged');").await;
    b.press("Delete the hook").await;
    assert!(b.text().await.contains("did not come from this console"), "{}", b.text().await);
    assert_eq!(stack.get(&format!("/v1/hooks/{id}"), &t).await.status, 200, "the hook is still there");

    // A page elsewhere signing the visitor out, or opening a portal link of its own in the
    // visitor's browser (signing them in to its tenant): refused, and nothing changes.
    let posting = |action: String| {
        format!(
            r#"<!doctype html><form method="post" action="{action}"></form><script>document.forms[0].submit()</script>"#
        )
    };
    elsewhere.always(
        Reply::body(200, posting(format!("{}/console/logout", stack.base_url())))
            .with_header("content-type", "text/html"),
    );
    b.visit(&elsewhere.url("/")).await;
    b.find("header.top").await;
    assert!(b.text().await.contains("Sign out from the console's own pages"), "{}", b.text().await);
    b.goto("/console/hooks").await;
    assert_eq!(b.path().await, "/console/hooks", "still signed in");
    let link = stack.post("/v1/portal/sessions", &stack.token("mallory", "portal:create"), &json!({})).await;
    let link = link.body["url"].as_str().unwrap().to_owned();
    elsewhere.always(Reply::body(200, posting(link.clone())).with_header("content-type", "text/html"));
    b.visit(&elsewhere.url("/")).await;
    b.find("header.top").await;
    assert!(b.text().await.contains("Open a portal link from its own page"), "{}", b.text().await);
    b.goto("/console/hooks").await;
    assert!(b.text().await.contains("kept"), "still in its own tenant: {}", b.text().await);
    b.close().await;
    // Nor was the link spent.
    let opened = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(&link)
        .send()
        .await
        .unwrap();
    assert!(opened.headers().get("set-cookie").is_some(), "{}", opened.status());
    stack.shutdown().await;
}

/// A hook moved to a portal session's site shows that session only what it got since: the
/// deliveries from before, for the sites it had then (perhaps another customer's), are not
/// listed, not readable one by one, and not replayed. They were all three. The delivery
/// here is dated by its event's own time, 4 s after it was published and so after the
/// move: it was shown too, until the history began that much later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_session_sees_only_what_a_hook_got_since_it_came_to_its_sites() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let hook = stack.create_hook(&t, &json!({"name": "moved", "url": r.url("/"), "sites": ["b"]})).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    // Whole seconds, as the envelope keeps them.
    let ahead = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now() + chrono::Duration::seconds(4), 0);
    stack
        .publish(
            &t,
            &json!({"detail-type": "user.login", "source": "idp", "site": "b", "time": ahead,
                    "detail": {"who": "b's user"}}),
        )
        .await;
    r.wait_for(1, WAIT).await;
    // A replay the tenant asked for while the hook was site b's (it matches nothing, so
    // sends nothing): its window and counts are about site b's deliveries.
    let earlier = stack
        .post(&format!("/v1/hooks/{id}/replay"), &t, &json!({"since": chrono::Utc::now() - chrono::Duration::hours(1)}))
        .await;
    assert_eq!(earlier.status, 202, "{}", earlier.body);
    assert_eq!(
        stack.put(&format!("/v1/hooks/{id}"), &t, &json!({"url": r.url("/"), "sites": ["a"]})).await.status,
        200
    );
    let moved = chrono::Utc::now();
    assert!(moved < ahead, "the move came before the delivery's date");
    let before = hookbridge_e2e::eventually(WAIT, || async {
        let list = stack.get(&format!("/v1/hooks/{id}/events"), &t).await.body;
        list["deliveries"][0]["delivery_id"].as_str().map(str::to_owned)
    })
    .await
    .expect("the site-b delivery, recorded");

    let link = stack.post("/v1/portal/sessions", &stack.token("acme", "portal:create"), &json!({"sites": ["a"]})).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let opened = http.post(link.body["url"].as_str().unwrap()).send().await.unwrap();
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = |path: String| {
        let req = http.get(format!("{}{path}", stack.base_url())).header("cookie", &cookie);
        async move {
            let a = req.send().await.unwrap();
            (a.status().as_u16(), a.text().await.unwrap())
        }
    };
    let (status, read) = page(format!("/console/hooks/{id}/read")).await;
    assert_eq!(status, 200);
    assert!(!read.contains(&before), "listed: {read}");
    let (status, one) = page(format!("/console/hooks/{id}/deliveries/{before}")).await;
    assert!(status == 404 || one.contains("no such delivery"), "{status}: {one}");
    assert!(!one.contains("b's user"));

    // A replay of the last hours, asked for by the session, re-sends nothing from before.
    // (Its history begins 16 s after the move; before then it has nothing to replay.)
    let history = moved + chrono::Duration::seconds(17);
    tokio::time::sleep((history - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    // What the hook got since is the session's: listed, and replayed.
    stack
        .publish(&t, &json!({"detail-type": "user.login", "source": "idp", "site": "a", "detail": {"who": "a's user"}}))
        .await;
    r.wait_for(2, WAIT).await;
    let since_move = hookbridge_e2e::eventually(WAIT, || async {
        let list = stack.get(&format!("/v1/hooks/{id}/events"), &t).await.body;
        let ids: Vec<String> = list["deliveries"]
            .as_array()?
            .iter()
            .filter_map(|d| d["delivery_id"].as_str().map(str::to_owned))
            .collect();
        ids.into_iter().find(|d| *d != before)
    })
    .await
    .expect("the site-a delivery, recorded");
    let (_, read) = page(format!("/console/hooks/{id}/read")).await;
    assert!(read.contains(&since_move) && !read.contains(&before), "{read}");
    let (_, hook_page) = page(format!("/console/hooks/{id}")).await;
    let at = hook_page.find("name=\"_csrf\" value=\"").unwrap() + "name=\"_csrf\" value=\"".len();
    let csrf = &hook_page[at..at + hook_page[at..].find('"').unwrap()];
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    // The form carries its own key, so posting it twice (a double click) starts one job.
    let at = read.find("name=\"once\" value=\"").unwrap() + "name=\"once\" value=\"".len();
    let once = &read[at..at + read[at..].find('"').unwrap()];
    for _ in 0..2 {
        let replayed = http
            .post(format!("{}/console/hooks/{id}/replay", stack.base_url()))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("_csrf={csrf}&once={once}&since={since}&status=SUCCEEDED"))
            .send()
            .await
            .unwrap();
        assert_eq!(replayed.status(), 303, "{}", replayed.text().await.unwrap());
    }
    let job = hookbridge_e2e::eventually(WAIT, || async {
        let listed = stack.get(&format!("/v1/hooks/{id}/replays"), &t).await.body;
        let newest = listed["replays"][0].clone();
        (newest["state"] == "SUCCEEDED").then_some(newest)
    })
    .await
    .expect("the session's replay job, done");
    assert_eq!(job["queued"], 1, "only the delivery since the move: {job}");
    r.wait_for(3, WAIT).await;
    let got = r.received();
    assert_eq!(got.len(), 3, "nothing from before was re-sent to the session's hook");
    assert_eq!(got[2].json()["detail"]["who"], "a's user", "the re-sent one is the site-a event");
    // The session's hook page lists its own replay, not the tenant's whose windows reach
    // back before the move: the one from before, nor ten since, which a page of ten newest
    // jobs would hold alone.
    for _ in 0..10 {
        let since = chrono::Utc::now() - chrono::Duration::hours(1);
        assert_eq!(stack.post(&format!("/v1/hooks/{id}/replay"), &t, &json!({"since": since})).await.status, 202);
    }
    let (_, hook_page) = page(format!("/console/hooks/{id}")).await;
    assert_eq!(hook_page.matches("<tr class=\"replay\"").count(), 1, "{hook_page}");
    let listed = stack.get(&format!("/v1/hooks/{id}/replays"), &t).await.body;
    assert_eq!(listed["replays"].as_array().unwrap().len(), 12, "the tenant sees all, the session's once: {listed}");
    // The tenant itself still reads it all.
    assert_eq!(stack.get(&format!("/v1/hooks/{id}/deliveries/{before}"), &t).await.status, 200);
    stack.shutdown().await;
}

/// Behind https the session cookie is `__Host-hb_session` (Path `/`, `Secure`), and a
/// cookie of the plain name, which a page on a sibling subdomain can set for the whole
/// domain, signs no one in: with it, a visitor was signed in to the planter's tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_https_the_session_cookie_is_one_only_this_host_can_set() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let t = stack.token("acme", ALL_SCOPES);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let url = |p: &str| format!("{}{p}", stack.base_url());
    let signed_in = http
        .post(url("/console/login"))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let set = signed_in.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with(&format!("__Host-hb_session=t.{t}; Path=/; Secure;")), "{set}");
    let page = |cookie: String| {
        let req = http.get(url("/console/hooks")).header("x-forwarded-proto", "https").header("cookie", cookie);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(page(format!("__Host-hb_session=t.{t}")).await, 200);
    let planted = stack.token("mallory", ALL_SCOPES);
    assert_eq!(page(format!("hb_session=t.{planted}")).await, 303, "to the sign-in page");
    assert_eq!(page(format!("hb_session=t.{planted}; __Host-hb_session=t.{t}")).await, 200);
    stack.shutdown().await;
}

/// The replay form asks for times as the page shows them, in the viewer's zone, and
/// sends the instant they name: a viewer in Tokyo typing a time copied from Read (shown
/// in Tokyo time) got a window nine hours off, refused as in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_window_is_read_in_the_viewers_time_zone() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let t = stack.token("acme", ALL_SCOPES);
    let r = Receiver::start().await;
    let hook = stack.create_hook(&t, &json!({"name": "zoned", "url": r.url("/")})).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let b = Browser::start_in_zone(stack.base_url(), 1280, 1000, Some("Asia/Tokyo")).await;
    sign_in(&b, &t).await;
    b.goto(&format!("/console/hooks/{id}/read")).await;
    assert!(b.text().await.contains("Since (your time)"), "{}", b.text().await);
    // Half an hour ago, as a clock in Tokyo (UTC+9, no daylight saving) reads it.
    let wanted = chrono::Utc::now() - chrono::Duration::minutes(30);
    let tokyo = (wanted + chrono::Duration::hours(9)).format("%Y-%m-%dT%H:%M");
    // Refused first (no status ticked): the form comes back with the time as it was typed,
    // in Tokyo time, not the UTC instant it was sent as.
    b.run(&format!(
        "document.querySelector('[name=since]').value = '{tokyo}'; document.querySelectorAll('[name=status]').forEach(c => c.checked = false)"
    ))
    .await;
    b.press("Replay").await;
    assert!(b.text().await.contains("must list at least one status"), "{}", b.text().await);
    let kept = b.find("form.replay [name=since]").await.prop("value").await.unwrap();
    assert_eq!(kept.as_deref(), Some(tokyo.to_string().as_str()), "shown in the viewer's zone again");
    b.run("document.querySelector('[name=status][value=FAILED]').checked = true").await;
    b.press("Replay").await;
    assert!(b.text().await.contains("Replay started"), "{}", b.text().await);
    let jobs = stack.get(&format!("/v1/hooks/{id}/replays"), &t).await.body;
    let since: chrono::DateTime<chrono::Utc> = jobs["replays"][0]["since"].as_str().unwrap().parse().unwrap();
    assert!((since - wanted).num_seconds().abs() < 60, "{since}, not half an hour ago ({wanted})");
    b.close().await;
    stack.shutdown().await;
}

/// Posts the sign-in form with `token`, not following where it leads: the status, whether
/// a session cookie was set, and the page.
async fn post_sign_in(stack: &TestStack, token: &str) -> (u16, bool, String) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let a = http
        .post(format!("{}/console/login", stack.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    (a.status().as_u16(), a.headers().get("set-cookie").is_some(), a.text().await.unwrap())
}

/// Signing out from a page older than the session (signed in again in another tab since):
/// the form carries the token of the session before, and the sign-out still happens. It
/// was refused as an expired form, and the browser stayed signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_from_a_page_older_than_the_session_signs_out() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = stack.base_url().to_owned();
    let form = ("content-type", "application/x-www-form-urlencoded");
    let signed_in = async |token: String| -> String {
        let a = http.post(format!("{base}/console/login")).header(form.0, form.1).body(format!("token={token}")).send();
        let a = a.await.unwrap();
        assert_eq!(a.status(), 303);
        a.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    let first = signed_in(stack.token("acme", ALL_SCOPES)).await;
    let page = http.get(format!("{base}/console/hooks")).header("cookie", &first).send().await.unwrap();
    let page = page.text().await.unwrap();
    let old_csrf = page.split(r#"name="_csrf" value=""#).nth(1).expect("a form").split('"').next().unwrap().to_owned();
    let second = signed_in(stack.token("acme", "hooks:read")).await;
    assert_ne!(first, second);
    let out = http
        .post(format!("{base}/console/logout"))
        .header("cookie", &second)
        .header("sec-fetch-site", "same-origin")
        .header(form.0, form.1)
        .body(format!("_csrf={old_csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303, "{}", out.text().await.unwrap());
    assert_eq!(out.headers()["location"], "/console/login");
    let cleared = out.headers().get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap();
        c.starts_with(&format!("{}=;", second.split('=').next().unwrap())) && c.contains("Max-Age=0")
    });
    assert!(cleared, "the session cookie is cleared: {:?}", out.headers().get_all("set-cookie"));
    stack.shutdown().await;
}

/// A token that cannot read hooks does not sign in: every console page reads hooks, and
/// signed in, its first page was a `403` whose only link led back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_hooks_read_does_not_sign_in() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let (status, cookie, page) = post_sign_in(&stack, &stack.token("acme", "events:publish portal:create")).await;
    assert_eq!(status, 403);
    assert!(!cookie, "no session");
    assert!(page.contains("hooks:read"), "says which scope it needs");
    assert_eq!(post_sign_in(&stack, &stack.token("acme", "hooks:read")).await.0, 303, "reading is enough");
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_works_on_the_aws_backend_too() {
    let stack = TestStack::start(Flavor::Aws).await;
    let t = stack.token("acme", ALL_SCOPES);
    let r = Receiver::start().await;
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    sign_in(&b, &t).await;
    create_hook(&b, "smoke", &r.url("/smoke"), &[]).await;
    assert!(b.text().await.contains("Hook created"));
    stack.publish(&t, &json!({"detail-type": "user.login", "source": "idp", "detail": {}})).await;
    r.wait_for(1, WAIT).await;
    let id = stack.get("/v1/hooks", &t).await.body["hooks"][0]["id"].as_str().unwrap().to_owned();
    b.goto(&format!("/console/hooks/{id}/read")).await;
    b.until("the delivery under Read", |t| t.contains("SUCCEEDED")).await;
    b.close().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_in_through_the_identity_provider_uses_the_code_flow_with_pkce() {
    let idp = hookbridge_testkit::IdentityProvider::start().await;
    idp.sign_in_as(json!({"sub": "alice", "tenant": "acme", "scope": "hooks:read", "aud": "hookbridge-api",
                          "exp": chrono::Utc::now().timestamp() + 3600}));
    let stack = issuer_stack(&idp, &[("HOOKBRIDGE_CONSOLE_SCOPES", "openid  hooks:read")]).await;
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto("/console/login").await;
    b.press("Sign in with your identity provider").await;
    b.until("signed in through the issuer", |t| t.contains("acme") && t.contains("No hooks yet")).await;
    assert_eq!(b.path().await, "/console/hooks");
    // Asked for the scopes configured and the audience the API checks: issuers such as
    // Auth0 and Okta put only the scopes asked for in the token, and Auth0 gives no JWT
    // without an audience.
    let asked = &idp.authorize_requests()[0];
    assert_eq!((asked["scope"].as_str(), asked["audience"].as_str()), ("openid hooks:read", "hookbridge-api"));
    assert!(b.text().await.contains("read-only"), "the issuer's token carried hooks:read only");
    // A code is good once: replaying the callback does not sign anyone in.
    b.goto("/console/callback?code=code-0&state=forged").await;
    assert!(b.text().await.contains("not started here"));
    // The issuer's error code is shown; words of someone else's choosing are not.
    b.goto("/console/callback?error=access_denied").await;
    assert!(b.text().await.contains("refused the sign-in (access_denied)"), "{}", b.text().await);
    b.goto("/console/callback?error=Your+account+is+locked%2C+call+0800+123").await;
    let text = b.text().await;
    assert!(text.contains("refused the sign-in.") && !text.contains("locked"), "{text}");
    b.close().await;
    // Signed out (an issuer's token lasts minutes), a page asked for is where the sign-in
    // through the issuer returns, not the hook list.
    let (_r, page, _) = issuer_hook_read_page(&stack, &idp, "come-back-here").await;
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto(&page).await;
    assert!(b.path().await.starts_with("/console/login"), "{}", b.path().await);
    b.press("Sign in with your identity provider").await;
    b.until("back at the page asked for", |t| t.contains("come-back-here")).await;
    assert_eq!(b.path().await, page);
    b.close().await;
    // A token the issuer gives without hooks:read does not sign in: every page reads hooks.
    idp.sign_in_as(json!({"sub": "bob", "tenant": "acme", "scope": "events:publish", "aud": "hookbridge-api",
                          "exp": chrono::Utc::now().timestamp() + 3600}));
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto("/console/login").await;
    b.press("Sign in with your identity provider").await;
    b.until("refused for want of hooks:read", |t| t.contains("no hooks:read scope")).await;
    assert!(b.path().await.starts_with("/console/callback"), "not signed in: {}", b.path().await);
    b.close().await;
    stack.shutdown().await;
}

/// The platform on the embedded backend, trusting tokens `idp` signs for `hookbridge-api`
/// and signing into its console through it, with `more` settings.
async fn issuer_stack(idp: &hookbridge_testkit::IdentityProvider, more: &[(&str, &str)]) -> TestStack {
    let mut settings = vec![
        ("HOOKBRIDGE_JWT_ISSUER", idp.issuer()),
        ("HOOKBRIDGE_JWT_AUDIENCE", "hookbridge-api"),
        ("HOOKBRIDGE_CONSOLE_CLIENT_ID", "hookbridge-console"),
    ];
    settings.extend_from_slice(more);
    TestStack::start_with(Flavor::Embedded, &settings).await
}

/// A hook named `name` of tenant `acme`, made with a token `idp` signed: its receiver (kept
/// while the test runs), the path of its Read page, and the token.
async fn issuer_hook_read_page(
    stack: &TestStack,
    idp: &hookbridge_testkit::IdentityProvider,
    name: &str,
) -> (Receiver, String, String) {
    let t = idp.sign(
        "rsa-1",
        &json!({"sub": "alice", "tenant": "acme", "scope": ALL_SCOPES, "aud": "hookbridge-api",
                "exp": chrono::Utc::now().timestamp() + 3600}),
    );
    let r = Receiver::start().await;
    let made = stack.create_hook(&t, &json!({"name": name, "url": r.url("/")})).await;
    let page = format!("/console/hooks/{}/read", made["id"].as_str().unwrap());
    (r, page, t)
}

/// A session signed in through the issuer, once it ends (an issuer's token lasts minutes),
/// is renewed through the issuer by the next page asked for, with no click, while the
/// browser is still signed in there; not after signing out, and not round and round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_from_the_issuer_is_renewed_through_it_when_it_ends() {
    let idp = hookbridge_testkit::IdentityProvider::start().await;
    let claims = |lasts: i64| {
        json!({"sub": "alice", "tenant": "acme", "scope": "hooks:read", "aud": "hookbridge-api",
               "exp": chrono::Utc::now().timestamp() + lasts})
    };
    let stack = issuer_stack(&idp, &[]).await;
    let (_r, page, t) = issuer_hook_read_page(&stack, &idp, "renewed-here").await;

    idp.sign_in_as(claims(3600));
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto("/console/login").await;
    b.press("Sign in with your identity provider").await;
    b.until("signed in through the issuer", |t| t.contains("renewed-here")).await;
    // The session ends, as the cookie's `Max-Age` (the token's lifetime) ends it.
    b.client.delete_cookie("hb_session").await.unwrap();
    b.goto(&page).await;
    b.until("back at the page, signed in again", |t| t.contains("renewed-here") && t.contains("Sign out")).await;
    assert_eq!(b.path().await, page);
    assert_eq!(idp.authorize_requests().len(), 2, "renewed through the issuer");
    // Signed out on purpose: the next page asked for stops at the sign-in page.
    b.press("Sign out").await;
    b.goto(&page).await;
    assert!(b.path().await.starts_with("/console/login?"), "{}", b.path().await);
    assert_eq!(idp.authorize_requests().len(), 2, "not signed in again by itself");
    // Refused by the API on the way back (the issuer's token lacks hooks:read): the trip
    // is not made by itself again.
    b.goto("/console/login").await;
    b.press("Sign in with your identity provider").await;
    b.until("signed in again", |t| t.contains("renewed-here")).await;
    idp.sign_in_as(json!({"sub": "alice", "tenant": "acme", "scope": "events:publish", "aud": "hookbridge-api",
                          "exp": chrono::Utc::now().timestamp() + 3600}));
    b.client.delete_cookie("hb_session").await.unwrap();
    b.goto(&page).await;
    b.until("refused for want of hooks:read", |t| t.contains("no hooks:read scope")).await;
    assert_eq!(idp.authorize_requests().len(), 4);
    assert!(b.client.get_named_cookie("hb_issuer").await.is_err(), "cleared");
    b.goto(&page).await;
    assert!(b.path().await.starts_with("/console/login?"), "{}", b.path().await);
    assert_eq!(idp.authorize_requests().len(), 4);
    b.close().await;

    // Sent there by itself within the last half minute: the sign-in page instead, so a
    // session the browser does not keep cannot send it round again and again.
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_out = |issuer: Option<String>| {
        let mut req = http.get(format!("{}/console/hooks", stack.base_url()));
        if let Some(v) = issuer {
            req = req.header("cookie", format!("hb_issuer={v}"));
        }
        async move {
            let a = req.send().await.unwrap();
            assert_eq!(a.status(), 303);
            let set = a.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
            (a.headers()["location"].to_str().unwrap().to_owned(), set)
        }
    };
    let (to, set) = signed_out(Some("0".to_owned())).await;
    assert_eq!(to, "/console/login/oidc");
    assert!(set.is_some_and(|c| c.starts_with("hb_issuer=") && !c.contains("Max-Age=0")), "when, kept");
    let just_now = chrono::Utc::now().timestamp().to_string();
    assert_eq!(signed_out(Some(just_now)).await.0, "/console/login");
    assert_eq!(signed_out(None).await.0, "/console/login", "never signed in through the issuer");
    let ahead = (chrono::Utc::now().timestamp() + 3600).to_string();
    assert_eq!(signed_out(Some(ahead)).await.0, "/console/login", "a time ahead of the clock counts as just now");
    assert_eq!(signed_out(Some(i64::MIN.to_string())).await.0, "/console/login/oidc", "long ago, and no overflow");
    // Signed in with a pasted token instead: a session the issuer does not renew.
    let pasted = http
        .post(format!("{}/console/login", stack.base_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", "hb_issuer=0")
        .body(format!("token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(pasted.status(), 303);
    let cleared = pasted.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned());
    assert!(cleared.into_iter().any(|c| c.starts_with("hb_issuer=;") && c.contains("Max-Age=0")), "cleared");
    stack.shutdown().await;
}

/// A form open in one tab while the session is renewed through the issuer in another (the
/// issuer's token lasts minutes) is still taken when sent: its CSRF token was made from the
/// session cookie, which the renewal replaced, so it was refused and what was typed lost.
/// Signing out ends what the forms are bound to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_form_open_while_another_tab_renews_the_session_is_still_taken() {
    let idp = hookbridge_testkit::IdentityProvider::start().await;
    let stack = issuer_stack(&idp, &[]).await;
    let (_r, page, t) = issuer_hook_read_page(&stack, &idp, "two-tabs").await;
    let edit = page.replace("/read", "/edit");
    idp.sign_in_as(json!({"sub": "alice", "tenant": "acme", "scope": ALL_SCOPES, "aud": "hookbridge-api",
                          "exp": chrono::Utc::now().timestamp() + 3600}));
    let b = Browser::start(stack.base_url(), 1280, 1000).await;
    b.goto("/console/login").await;
    b.press("Sign in with your identity provider").await;
    b.until("signed in through the issuer", |t| t.contains("two-tabs")).await;
    b.goto(&edit).await;
    b.fill("description", "typed before the renewal").await;
    let first = b.client.window().await.unwrap();
    let before = b.client.get_named_cookie("hb_session").await.unwrap().value().to_owned();

    // Another tab: the session has ended, and the next page renews it through the issuer.
    let second = b.client.new_window(true).await.unwrap().handle;
    b.client.switch_to_window(second).await.unwrap();
    b.goto("/console/hooks").await;
    idp.sign_in_as(json!({"sub": "alice", "tenant": "acme", "scope": ALL_SCOPES, "aud": "hookbridge-api",
                          "exp": chrono::Utc::now().timestamp() + 3000}));
    b.client.delete_cookie("hb_session").await.unwrap();
    b.goto(&page).await;
    b.until("signed in again", |t| t.contains("two-tabs") && t.contains("Sign out")).await;
    assert_eq!(idp.authorize_requests().len(), 2, "renewed through the issuer");
    let after = b.client.get_named_cookie("hb_session").await.unwrap().value().to_owned();
    assert_ne!(before, after, "a new session");

    b.client.switch_to_window(first).await.unwrap();
    b.press("Save").await;
    assert!(b.text().await.contains("Saved."), "{}", b.text().await);
    let saved = stack.get(&format!("/v1/hooks/{}", page.split('/').nth(3).unwrap()), &t).await.body;
    assert_eq!(saved["description"], "typed before the renewal");

    assert!(b.client.get_named_cookie("hb_forms").await.is_ok(), "the forms cookie, kept by the renewal");
    b.press("Sign out").await;
    assert!(b.client.get_named_cookie("hb_forms").await.is_err(), "cleared at sign-out");
    b.close().await;
    stack.shutdown().await;
}

/// A hook with more deliveries in the window than a Read page holds: each page links to
/// the older ones, and following the links reaches every delivery once. Read showed the
/// newest 100 as if they were all there was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_pages_through_every_delivery_of_a_busy_hook() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let r = Receiver::start().await;
    let t = stack.token("acme", ALL_SCOPES);
    let hook = stack.create_hook(&t, &json!({"name": "busy", "url": r.url("/")})).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    for call in 0..11 {
        let events: Vec<_> = (0..10)
            .map(|n| json!({"detail-type": "user.login", "source": "idp", "detail": {"n": call * 10 + n}}))
            .collect();
        stack.publish(&t, &json!(events)).await;
    }
    r.wait_for(110, WAIT).await;

    let http = reqwest::Client::new();
    let cookie = format!("hb_session=t.{t}");
    let link = format!("href=\"/console/hooks/{id}/deliveries/");
    // Every delivery's link, page after page, and how many pages.
    let read_all = || async {
        let (mut seen, mut pages) = (Vec::new(), 0);
        let mut path = Some(format!("/console/hooks/{id}/read?hours=24"));
        while let Some(p) = path.take() {
            let page = http
                .get(format!("{}{p}", stack.base_url()))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            pages += 1;
            for (at, _) in page.match_indices(&link) {
                let rest = &page[at + link.len()..];
                seen.push(rest[..rest.find('"').unwrap()].to_owned());
            }
            if let Some(at) = page.find("\">Older deliveries") {
                let start = page[..at].rfind("href=\"").unwrap() + "href=\"".len();
                path = Some(page[start..at].replace("&amp;", "&"));
            }
        }
        (seen, pages)
    };
    let (seen, pages) = hookbridge_e2e::eventually(WAIT, || async {
        let (seen, pages) = read_all().await;
        (seen.len() >= 110).then_some((seen, pages))
    })
    .await
    .expect("every delivery recorded and listed");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len(), pages), (110, 110, 2), "each delivery once, over two pages");
    stack.shutdown().await;
}

/// The hooks list shows a page of hooks at a time, filters kept from page to page. The
/// whole tenant in one page could pass Lambda's 6 MB response limit (a row can be some
/// 50 KB) and fail the console's landing page for everyone in the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hooks_list_is_shown_a_page_at_a_time() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let t = stack.token("acme", ALL_SCOPES);
    for n in 0..60 {
        stack.create_hook(&t, &json!({"name": format!("h-{n:02}"), "url": format!("https://r{n}.example/")})).await;
    }
    let link = stack.post("/v1/portal/sessions", &stack.token("acme", "portal:create"), &json!({})).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let opened = http.post(link.body["url"].as_str().unwrap()).send().await.unwrap();
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = |query: &str| {
        let req = http.get(format!("{}/console/hooks{query}", stack.base_url())).header("cookie", &cookie);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let rows = |html: &str| html.matches("data-label=\"Name\"").count();

    let first = page("").await;
    assert_eq!(rows(&first), 50, "{first}");
    assert!(first.contains("1–50 of 60 matching hooks") && first.contains("page=2"), "{first}");
    let second = page("?page=2").await;
    assert_eq!(rows(&second), 10);
    assert!(second.contains("h-59") && !second.contains("page=3"));
    // A filter holds across pages; a page past the last shows the last.
    let filtered = page("?name=h-5&page=9").await;
    assert_eq!(rows(&filtered), 10, "h-50 to h-59");
    assert!(filtered.contains("10 of 60 hooks"), "{filtered}");
    stack.shutdown().await;
}

/// A token too large for a browser to keep as a cookie (many roles or group claims) is
/// refused at sign-in, saying why. It was set as the session cookie, which the browser
/// dropped silently, and the sign-in looped back to the sign-in page with no word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_too_large_for_a_cookie_is_refused_at_sign_in_saying_why() {
    let stack = TestStack::start(Flavor::Embedded).await;
    let (status, cookie, _) = post_sign_in(&stack, &stack.token("acme", ALL_SCOPES)).await;
    assert_eq!((status, cookie), (303, true), "an ordinary token signs in");
    let large = stack.token("acme", &format!("{ALL_SCOPES} {}", "role:reader ".repeat(400)));
    assert!(large.len() > 4096);
    let (status, cookie, page) = post_sign_in(&stack, &large).await;
    assert_eq!((status, cookie), (400, false));
    assert!(page.contains("too large for a browser to keep as a cookie"), "{page}");
    stack.shutdown().await;
}
