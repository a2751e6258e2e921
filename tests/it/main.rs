//! Integration tests: real server, real peers (started by `scripts/test`).

// Everything in this binary is test code: lets clippy's `allow-*-in-tests` cover the helpers too.
#![cfg(test)]

mod arm_fake;
mod audit_api;
mod aws;
mod azure;
mod broker_aws;
mod broker_azure;
mod broker_entra;
mod bundles;
mod chaos;
mod checkpoints;
mod checkpoints_aws;
mod cli_e2e;
mod cli_messages;
mod cli_paging;
mod db_roles;
mod fault_proxy;
mod graph;
mod graph_fake;
mod health;
mod identity;
mod layers;
mod multi;
mod notify;
mod openapi;
mod outbox;
mod paging;
mod policy;
mod process;
mod report;
mod revocation;
mod scheduled;
mod scheduler;
mod secrets_aws;
mod sessions;
mod sqlite_engine;
mod store;
mod support;
mod tamper;
mod tamper_corpus;
mod ui_paging;
mod wait;
mod web;
mod wording;
mod workflow;
