//! The committed PTX (kernels/ptx), embedded at compile time. The root build.rs refuses to
//! build when it is stale against kernels/*.cu; a test in cmt-kernel-check checks that this
//! list matches kernels/ptx/manifest.json.
macro_rules! ptx {
    ($($name:literal),* $(,)?) => {
        /// (module, PTX text) for every kernels/*.cu.
        pub const MODULES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../../kernels/ptx/", $name, ".ptx")))),*
        ];
    };
}

ptx!(
    "attention",
    "compress_attention",
    "cross_entropy",
    "embedding",
    "matmul",
    "residual",
    "rmsnorm",
    "rope",
    "swiglu",
    "topk_aggregate"
);

pub fn source(module: &str) -> Option<&'static str> {
    MODULES.iter().find(|(m, _)| *m == module).map(|(_, s)| *s)
}
