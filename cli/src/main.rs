fn main() -> std::process::ExitCode {
    lclstream_cli::main()
}
