//! Integration tests: real server, real peers (started by `scripts/test`).

mod graph;
mod graph_fake;
mod support;
