//! The `cgflow` command-line tool; see `cgflow --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
