//! `jit`: request just-in-time access, approve, and get AWS credentials.

use std::process::ExitCode;

fn main() -> ExitCode {
    jit::run()
}
