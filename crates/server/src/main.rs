//! The `cloakroom` binary: see `cloakroom --help`.

/// mimalloc rather than the system allocator: on the forward-auth path (a few small allocations
/// per request, on two worker threads) glibc's malloc cost about 5% of the server's CPU, part of
/// it consolidating free lists; see docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cloakroom_server::cli::main()
}
