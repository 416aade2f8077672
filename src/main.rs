//! The `cgflow` command-line tool; see `cgflow --help`.

fn main() -> std::process::ExitCode {
    cgflow::cli::main()
}
