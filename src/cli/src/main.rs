//! `jit`: answers `jit credential-process ENT` from a fresh cache entry itself and hands
//! every other command to `jit-client` beside it (`jit_cli_base::front`). It links
//! `jit-cli-base` only, not the `jit` library: no HTTP client, TLS or clap here.

use std::process::ExitCode;

fn main() -> ExitCode {
    jit_cli_base::front::main()
}
