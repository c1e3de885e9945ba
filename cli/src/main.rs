// Batches are megabytes each: glibc's malloc maps and unmaps such buffers on
// every allocation, and the page faults cost more than encoding them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lclstream_cli::main()
}
