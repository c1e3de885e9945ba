//! The `lclstream` binary, built in this package for end-to-end tests.

fn main() -> std::process::ExitCode {
    lclstream_cli::main()
}
