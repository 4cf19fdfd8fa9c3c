//! The `klaxon` binary; everything lives in the library.

/// mimalloc: the scripts allocate many small short-lived values per event, where it
/// measured faster than the system allocator (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    klaxon::cli::main()
}
