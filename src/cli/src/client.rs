//! `jit-client`: the full `jit` command-line client: request just-in-time access, approve,
//! and get AWS credentials. `jit` runs it with its own arguments.

use std::process::ExitCode;

fn main() -> ExitCode {
    jit::run()
}
