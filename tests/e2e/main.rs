//! End-to-end tests: the gateway in front of the real Django services.
//!
//! The services start once for the whole run (migrations, seed data, two
//! student_api replicas), every scenario runs against them, and they are
//! stopped before the process exits, also when a scenario fails.

mod django;
#[path = "../support/gateway.rs"]
mod gateway;
mod scenarios;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use django::DjangoServices;
use gateway::Gateway;

type Scenario = for<'a> fn(&'a Gateway) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

fn gateway_config(services: &DjangoServices) -> String {
    let mut toml = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n# /readyz checks every service.\nreadiness = { require_healthy_endpoints = true }\n\n",
    );
    for (name, addresses) in &services.addresses {
        let endpoints: Vec<String> = addresses.iter().map(|address| format!("\"http://{address}\"")).collect();
        toml.push_str(&format!(
            "[services.{name}]\nendpoints = [{}]\nhealth_check = {{ interval = \"200ms\" }}\n\
             passive_health = {{ consecutive_failures = 1 }}\n",
            endpoints.join(", ")
        ));
        // The profile speaks the caller's language and remembers it in a
        // cookie: both reach a GraphQL client through these rules.
        if *name == "student_api" {
            toml.push_str(
                "headers = { request = [{ name = \"accept-language\" }], \
                 response = [\"set-cookie\", \"content-language\", \"vary\"] }\n",
            );
        }
        toml.push('\n');
        let prefix = name.replace('_', "-");
        toml.push_str(&format!("[[routes]]\nprefix = \"/{prefix}/\"\nservice = \"{name}\"\n\n"));
    }
    toml.push_str(&format!("[auth.jwt]\nalgorithms = [\"HS256\"]\nsecret = \"{}\"\n\n", scenarios::SECRET));
    // The services' default key (services/portico_common/settings.py).
    toml.push_str(&format!(
        "[identity_signing]\nkeys = [{{ id = \"demo\", secret = \"{}\" }}]\n\n",
        scenarios::DEMO_SIGNING_KEY
    ));
    toml.push_str("[graphql]\nenabled = true\n\n[graphql.uploads]\nenabled = true\nmax_file_size = \"2MiB\"\n\n");
    let dashboard = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/operations/dashboard.graphql");
    toml.push_str(&format!(
        "[[operations]]\nmethod = \"GET\"\npath = \"/bff/dashboard/{{id}}\"\ndocument = \"{}\"\nauth = \"required\"\n",
        dashboard.display()
    ));
    toml
}

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|argument| !argument.starts_with('-'));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut services = DjangoServices::start();
    let mut gateway = runtime.block_on(Gateway::start(&gateway_config(&services)));

    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, scenario) in scenarios::ALL {
        if filter.as_deref().is_some_and(|filter| !name.contains(filter)) {
            continue;
        }
        ran += 1;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(scenario(&gateway))));
        match outcome {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failures.push(*name);
            }
        }
    }

    if filter.as_deref().is_none_or(|filter| "identity_sent_straight_to_a_service_is_refused".contains(filter)) {
        ran += 1;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(scenarios::identity_sent_straight_to_a_service_is_refused(&services))
        }));
        match outcome {
            Ok(()) => println!("test identity_sent_straight_to_a_service_is_refused ... ok"),
            Err(_) => {
                println!("test identity_sent_straight_to_a_service_is_refused ... FAILED");
                failures.push("identity_sent_straight_to_a_service_is_refused");
            }
        }
    }

    // Last, because it takes a replica away: the gateway keeps answering.
    if filter.as_deref().is_none_or(|filter| "replica_failover".contains(filter)) {
        ran += 1;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(scenarios::replica_failover(&gateway, &mut services))
        }));
        match outcome {
            Ok(()) => println!("test replica_failover ... ok"),
            Err(_) => {
                println!("test replica_failover ... FAILED");
                failures.push("replica_failover");
            }
        }
    }
    runtime.block_on(async {
        gateway.begin_shutdown();
        gateway.stopped().await;
    });
    drop(services);

    println!("\ne2e: {} passed; {} failed", ran - failures.len(), failures.len());
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failures: {failures:?}");
        ExitCode::FAILURE
    }
}
