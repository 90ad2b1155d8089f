//! Compiles the C shim against a llama.cpp build's headers and links its libllama.so.
//! `LLAMA_CPP_PREFIX` is a directory with `include/llama.h` and `llama_cpp/lib/libllama.so`:
//! the site-packages directory of llama-cpp-python built from source (README.md here).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LLAMA_CPP_PREFIX");
    println!("cargo:rerun-if-changed=src/shim.c");
    let Some(prefix) = std::env::var_os("LLAMA_CPP_PREFIX").map(PathBuf::from) else {
        panic!(
            "LLAMA_CPP_PREFIX is unset: point it at the site-packages directory of a \
             llama-cpp-python built from source (it holds include/llama.h and \
             llama_cpp/lib/libllama.so); see peers/llamacpp-bench/README.md"
        );
    };
    let (inc, lib) = (prefix.join("include"), prefix.join("llama_cpp/lib"));
    for need in [inc.join("llama.h"), lib.join("libllama.so")] {
        assert!(
            need.exists(),
            "LLAMA_CPP_PREFIX: {} is missing",
            need.display()
        );
    }
    cc::Build::new()
        .file("src/shim.c")
        .include(&inc)
        .opt_level(2)
        .compile("llamashim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=llama");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
