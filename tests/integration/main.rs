//! Integration tests: the gateway in-process, real HTTP stub backends on
//! ephemeral ports, real HTTP clients.

mod auth;
mod balancing;
mod cache;
mod cors;
mod discovery;
#[path = "../support/dns.rs"]
mod dns_server;
mod errors;
mod graphql;
mod harness;
mod headers;
mod kubernetes;
mod operations;
mod playground;
mod process;
mod protocol;
mod ratelimit;
mod readiness;
mod recovery;
#[path = "../support/redis.rs"]
mod redis_server;
mod reload;
mod replicas;
mod resilience;
mod routing;
mod shutdown;
mod signing;
mod streaming;
mod telemetry;
mod tls;
mod uploads;
