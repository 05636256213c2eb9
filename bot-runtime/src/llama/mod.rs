//! What the local chat model and the knowledge base's embedding model share
//! of llama.cpp (crate `llama-cpp-2`): its process-wide state, the thread
//! count, and the checks made before it is touched.

mod checks;

use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;

pub use checks::{cpu_problem, model_file_problem};

/// llama.cpp's process-wide state, set up once.
pub fn backend() -> &'static LlamaBackend {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
        // Fails only when initialised twice, which the OnceLock rules out.
        LlamaBackend::init().expect("llama.cpp backend initialised once")
    })
}

/// Threads for llama.cpp's matrix work: every CPU this process may use.
pub fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
}
