//! The GraphiQL playground in a real browser: Debian's Chromium, headless,
//! driven through chromedriver. The page and its assets come from the
//! gateway alone; the browser has no internet access here.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::graphql::{backends, token, Behaviour, DASHBOARD, SECRET};
use crate::harness::{client, eventually, Gateway};

/// chromedriver on a free port, stopped when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let port = crate::harness::closed_port().await.port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian package chromium-driver; .ci/run installs it)");
        eventually(Duration::from_secs(20), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        ChromeDriver { child, port }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_playground_runs_the_dashboard_operation_in_a_browser() {
    let backends = backends(Behaviour::default(), &format!("playground_assets = {:?}", assets_folder())).await;
    let gateway = Gateway::start(&backends.toml).await;
    let driver = ChromeDriver::start().await;

    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": "/usr/bin/chromium",
            // Tall enough for the editor to render the whole Dashboard
            // answer: its fields come in the operation's order, payments last.
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,4000"]
        }),
    );
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session");

    let headers = json!({"Authorization": format!("Bearer {}", token("1", "payments:read"))}).to_string();
    let fragment = url_fragment(&[("query", DASHBOARD), ("variables", r#"{"id": "1"}"#), ("headers", &headers)]);
    let outcome = async {
        browser.goto(&format!("{}#{fragment}", gateway.url("/graphql"))).await?;
        let run = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(".graphiql-execute-button"))
            .await?;
        run.click().await?;
        let result =
            browser.wait().at_most(Duration::from_secs(20)).for_element(Locator::Css(".graphiql-response")).await?;
        let mut text = String::new();
        for _ in 0..100 {
            text = result.text().await?;
            if text.contains("Ada Lovelace") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The docs explorer is built from the standard introspection query,
        // which GraphiQL sent when the page loaded.
        browser.find(Locator::Css(r#"button[aria-label="Show Documentation Explorer"]"#)).await?.click().await?;
        let student = browser
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath(
                r#"//section[@aria-label="Documentation Explorer"]//*[normalize-space(text())="Student"]"#,
            ))
            .await?;
        let listed = student.text().await?;
        Ok::<(String, String), fantoccini::error::CmdError>((text, listed))
    }
    .await;
    let _ = browser.close().await;
    let (text, listed) = outcome.expect("the playground loads, runs, renders and lists the schema's types");
    assert_eq!(listed, "Student", "the docs explorer lists the schema's types");
    assert!(text.contains("\"fullName\": \"Ada Lovelace\""), "rendered result: {text}");
    assert!(text.contains("\"title\": \"Lesson 7\""), "rendered result: {text}");
    assert!(text.contains("\"amount\": \"49.00\""), "rendered result: {text}");
    assert_eq!(backends.calls.list().len(), 4, "the browser's run made the Dashboard's four calls");
}

fn assets_folder() -> std::path::PathBuf {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join("graphiql");
    assert!(folder.join("graphiql.min.js").is_file(), "GraphiQL's files are missing: run `cargo xtask setup`");
    folder
}

fn url_fragment(pairs: &[(&str, &str)]) -> String {
    let encode =
        |text: &str| percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string();
    pairs.iter().map(|(key, value)| format!("{key}={}", encode(value))).collect::<Vec<_>>().join("&")
}

/// The token in a playground page's default headers, if it has one.
fn page_token(page: &str) -> Option<String> {
    let start = page.find("Bearer ")? + "Bearer ".len();
    let rest = &page[start..];
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_'))?;
    Some(rest[..end].to_owned())
}

#[tokio::test]
async fn a_development_playground_caller_opens_the_page_with_a_token_and_only_when_configured() {
    let backends = backends(Behaviour::default(), "").await;
    let page = |gateway: &Gateway| {
        let url = gateway.url("/graphql");
        async move {
            client().get(url).header("accept", "text/html").send().await.expect("page").text().await.expect("text")
        }
    };
    let plain = Gateway::start(&backends.toml).await;
    assert_eq!(page_token(&page(&plain).await), None, "no caller configured: the playground starts empty");

    let with_caller = backends.toml.replace(
        "[graphql]\nenabled = true\n",
        "[graphql]\nenabled = true\nplayground_caller = { sub = \"1\", scopes = [\"payments:read\"] }\n",
    );
    let gateway = Gateway::start(&with_caller).await;
    let token = page_token(&page(&gateway).await).expect("a token in the page's default headers");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims =
        jsonwebtoken::decode::<Value>(&token, &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()), &validation)
            .expect("a token the gateway's secret signed")
            .claims;
    assert_eq!(claims["sub"], "1");
    assert_eq!(claims["scope"], "payments:read");
    // And the gateway accepts it: the payments come back.
    let answer = client()
        .post(gateway.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": "{ payments(studentId: 1) { amount } }"}))
        .send()
        .await
        .expect("answer");
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["data"]["payments"][0]["amount"], "49.00", "{body}");
}
