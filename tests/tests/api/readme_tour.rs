//! The README's "A tour with curl", run as written on every store: the commands are read out of README.md, so the
//! tour cannot drift from what the suite answers, and "serves the tour unchanged" holds for Spanner as for the rest.

use serde_json::Value;
use stockroom_e2e::{Backend, Reply, TestApp};

on_every_store!(the_readme_tour_runs_as_written);

/// One `curl` of the tour, as its words say.
#[derive(Debug)]
struct Curl {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// The commands of the first `sh` block after "## A tour with curl": comments dropped, `\` continuations joined,
/// `;` ending a command.
fn tour() -> Vec<Curl> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let section = readme.split("## A tour with curl").nth(1).expect("the README has a curl tour");
    let block = section.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("the tour's sh block");
    // shlex drops `#` comments and takes newlines as spaces (a quoted body spans lines): each command begins at
    // its `curl`, and a word ending in `;` ends one.
    let words = shlex::split(&block.replace("\\\n", " ")).expect("the tour's shell parses");
    let mut commands = Vec::new();
    let mut command: Vec<String> = Vec::new();
    for word in words {
        if word == "curl" && !command.is_empty() {
            commands.push(curl(std::mem::take(&mut command)));
        }
        match word.strip_suffix(';') {
            Some(last) => {
                command.push(last.to_owned());
                commands.push(curl(std::mem::take(&mut command)));
            }
            None => command.push(word),
        }
    }
    if !command.is_empty() {
        commands.push(curl(command));
    }
    commands
}

fn curl(words: Vec<String>) -> Curl {
    assert_eq!(words.first().map(String::as_str), Some("curl"), "the tour runs only curl: {words:?}");
    let mut words = words.into_iter().skip(1);
    let (mut method, mut path, mut headers, mut body) = (None, None, Vec::new(), None);
    while let Some(word) = words.next() {
        match word.as_str() {
            "-X" => method = words.next(),
            "-H" => {
                let header = words.next().expect("-H takes a header");
                let (name, value) = header.split_once(':').expect("a header is name: value");
                headers.push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "-d" => body = words.next(),
            url => {
                let rest = url.strip_prefix("localhost:8080").unwrap_or_else(|| panic!("the tour calls {url}"));
                path = Some(rest.to_owned());
            }
        }
    }
    let method = method.unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    Curl { method, path: path.expect("a curl names its URL"), headers, body }
}

async fn the_readme_tour_runs_as_written(b: Backend) {
    let commands = tour();
    assert!(commands.len() >= 20, "the tour was read whole: {} commands", commands.len());
    let app = TestApp::spawn(b).await;
    let mut replies: Vec<(String, Reply)> = Vec::new();
    for c in &commands {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let reply = app.api.send(&c.method, &c.path, &headers, c.body.clone().map(String::into_bytes)).await;
        replies.push((format!("{} {}", c.method, c.path), reply));
    }
    let statuses: Vec<(&str, u16)> = replies.iter().map(|(what, r)| (what.as_str(), r.status)).collect();
    let find = |prefix: &str| -> &Reply {
        &replies
            .iter()
            .find(|(what, _)| what.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {statuses:?}"))
            .1
    };

    // What the tour's comments promise, and no other failure.
    let expected_refusals = [
        ("POST /v1/reservations", 409, "insufficient_stock"),
        ("POST /v1/reservations/cart-2/release", 404, "unknown_reservation"),
    ];
    for (what, r) in &replies {
        match expected_refusals.iter().find(|(w, status, _)| what == w && r.status == *status) {
            Some((_, _, code)) => assert_eq!(r.error_code(), *code, "{what}: {}", r.body),
            None if what == "POST /v1/reservations" => assert_eq!(r.status, 201, "{what}: {}", r.body),
            None => assert!((200..300).contains(&r.status), "{what} answered {}: {}\n{statuses:?}", r.status, r.body),
        }
    }
    assert_eq!(
        replies.iter().filter(|(_, r)| r.status >= 400).count(),
        expected_refusals.len(),
        "exactly the refusals the tour tells of: {statuses:?}"
    );

    // The hold of 5 was split by priority, 3 from main and 2 from overflow.
    let held = &replies.iter().find(|(what, r)| what == "POST /v1/reservations" && r.status == 201).expect("cart-1").1;
    let mut split: Vec<(String, i64)> = held.body["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .flat_map(|l| l["allocations"].as_array().cloned().unwrap_or_default())
        .map(|a| (a["location"].as_str().unwrap_or_default().to_owned(), a["quantity"].as_i64().unwrap_or_default()))
        .collect();
    split.sort();
    assert_eq!(split, [("main".to_owned(), 3), ("overflow".to_owned(), 2)], "{}", held.body);

    // Committed 4, shipped them, the fifth released: 13 arrived, 4 left, none held.
    assert_eq!(find("GET /v1/reservations/cart-1").body["status"], "fulfilled");
    let stock = find("GET /v1/stock/TSHIRT-M").body.clone();
    assert_eq!(stock["total"]["on_hand"], 13, "levels before the checkout: {stock}");
    let after = app.api.stock("TSHIRT-M").await["total"].clone();
    assert_eq!(
        (after["on_hand"].as_i64(), after["reserved"].as_i64(), after["committed"].as_i64()),
        (Some(9), Some(0), Some(0)),
        "{after}"
    );
    let movements = find("GET /v1/movements?sku=TSHIRT-M").body["movements"].as_array().map(Vec::len);
    assert!(movements.is_some_and(|n| n >= 5), "the ledger lists the tour's movements: {movements:?}");
    let openapi: &Value = &find("GET /openapi.json").body;
    assert!(openapi["paths"]["/v1/reservations"].is_object(), "the OpenAPI description is served");
}
