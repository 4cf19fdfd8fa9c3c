//! `klaxon-bench`: load generation and event mixes for benchmarking klaxon.

fn main() -> std::process::ExitCode {
    klaxon_bench::cli::main()
}
