//! A real headless Chromium (Debian's `chromium` and `chromium-driver`, which `make test`
//! installs), driven over WebDriver, for the console's browser tests. Screenshots go to
//! `HOOKBRIDGE_SCREENSHOTS` (e.g. `docs/console`) when it is set.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

/// Looks, 25 ms apart, for a pressed button's page to come and to load: 30 s.
const PAGE_WAITS: usize = 1200;

/// A browser session and the driver behind it (stopped when dropped).
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    base: String,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn driver_binary() -> String {
    std::env::var("HOOKBRIDGE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned())
}

impl Browser {
    /// A fresh headless Chromium, `width`×`height`, on pages under `base`.
    pub async fn start(base: &str, width: u32, height: u32) -> Self {
        Self::start_in_zone(base, width, height, None).await
    }

    /// [`Browser::start`], with the browser's clock in time zone `zone` (`Asia/Tokyo`).
    pub async fn start_in_zone(base: &str, width: u32, height: u32, zone: Option<&str>) -> Self {
        let port = hookbridge_testkit::Receiver::free_addr().port();
        let mut driver = Command::new(driver_binary());
        if let Some(zone) = zone {
            driver.env("TZ", zone);
        }
        let driver = driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (make test installs Debian's chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         format!("--window-size={width},{height}"), "--lang=en-US"],
            }),
        );
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Self { client, driver, base: base.trim_end_matches('/').to_owned() };
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("chromedriver did not start: {last:?}");
    }

    /// Goes to `path` under the base.
    pub async fn goto(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.expect("navigate");
    }

    /// Goes to `url`, anywhere (another origin's page).
    pub async fn visit(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The current path (and query).
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        let q = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}{q}", url.path())
    }

    /// The element `css` (waiting up to 10 s for it).
    pub async fn find(&self, css: &str) -> Element {
        match self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => panic!("no {css} on {}: {e}", self.path().await),
        }
    }

    /// Every element `css`.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.expect("find all")
    }

    /// Types `value` into the input named `name` (replacing what it held).
    pub async fn fill(&self, name: &str, value: &str) {
        let e = self.find(&format!("[name=\"{name}\"]")).await;
        e.clear().await.expect("clear");
        e.send_keys(value).await.expect("type");
    }

    /// Chooses `value` in the select named `name`.
    pub async fn choose(&self, name: &str, value: &str) {
        self.find(&format!("select[name=\"{name}\"]")).await.select_by_value(value).await.expect("select");
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    /// Clicks the button whose text is `label`, and waits for the page it leads to.
    pub async fn press(&self, label: &str) {
        let before = self.find("html").await;
        let buttons = self.all("button, a.button").await;
        for b in buttons {
            if b.text().await.is_ok_and(|t| t.trim() == label) {
                b.click().await.expect("click");
                // The old page's root goes stale once the next page has replaced it, and the
                // next page is read once it has loaded whole. Each wait ends as soon as it
                // happens. The first wait was 5 s, and under a whole `make test` a page's
                // fields were once looked for on the page before it, most likely so.
                for _ in 0..PAGE_WAITS {
                    if before.tag_name().await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                self.loaded().await;
                self.find("body").await;
                return;
            }
        }
        panic!("no button {label:?} on {}", self.path().await);
    }

    /// Waits (up to 30 s) until the page has loaded whole.
    async fn loaded(&self) {
        for _ in 0..PAGE_WAITS {
            let state = self.client.execute("return document.readyState", vec![]).await;
            if state.is_ok_and(|s| s == "complete") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The header `name` of the answer to a `GET` of `path` from the page (its cookies sent).
    pub async fn fetched_header(&self, path: &str, name: &str) -> Option<String> {
        let script = "const [path, name, done] = arguments; \
                      fetch(path, {credentials: 'same-origin'}).then(r => done(r.headers.get(name)), () => done(null));";
        let got = self.client.execute_async(script, vec![path.into(), name.into()]).await.expect("script");
        got.as_str().map(str::to_owned)
    }

    /// Runs `script` in the page.
    pub async fn run(&self, script: &str) {
        self.client.execute(script, vec![]).await.expect("script");
    }

    /// The page's text.
    pub async fn text(&self) -> String {
        // A page that is still navigating (a redirect, a form the page submits
        // itself) can replace the body between finding it and reading it.
        for _ in 0..40 {
            match self.find("body").await.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => panic!("text of {}: {e}", self.path().await),
            }
        }
        panic!("the body of {} kept going stale", self.path().await);
    }

    /// Reloads until `check` holds on the page's text (or 30 s pass).
    pub async fn until(&self, what: &str, check: impl Fn(&str) -> bool) {
        for _ in 0..150 {
            if check(&self.text().await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.client.refresh().await.expect("reload");
        }
        panic!("{what}: never seen on {}", self.path().await);
    }

    /// Saves a screenshot as `name.png` when `HOOKBRIDGE_SCREENSHOTS` names a directory.
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("HOOKBRIDGE_SCREENSHOTS") else { return };
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}
