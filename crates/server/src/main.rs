//! The `cloakroom` binary: see `cloakroom --help`.

fn main() -> std::process::ExitCode {
    cloakroom_server::cli::main()
}
