//! Refuses to build when kernels/*.cu or *.cuh changed since kernels/ptx was generated
//! (the PTX the runtime embeds would silently be the old code). Cheap: hashes a few small
//! files; needs no CUDA tool.
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}: run `cargo xtask build-kernels` and commit kernels/ptx");
    std::process::exit(1);
}

fn main() {
    let kernels = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_path = kernels.join("ptx/manifest.json");
    let Ok(text) = std::fs::read_to_string(&manifest_path) else {
        fail("kernels/ptx/manifest.json is missing");
    };
    let Ok(manifest) = serde_json::from_str::<serde_json::Value>(&text) else {
        fail("kernels/ptx/manifest.json is not valid JSON");
    };
    let recorded: BTreeMap<String, String> = manifest["sources"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mut on_disk = BTreeMap::new();
    for entry in std::fs::read_dir(kernels).into_iter().flatten().flatten() {
        let p = entry.path();
        if matches!(p.extension().and_then(|x| x.to_str()), Some("cu" | "cuh")) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap_or_default();
            on_disk.insert(name, hex(&bytes));
        }
    }
    for (name, hash) in &on_disk {
        match recorded.get(name) {
            None => fail(&format!(
                "kernels/{name} is new since kernels/ptx was generated"
            )),
            Some(h) if h != hash => fail(&format!(
                "kernels/{name} changed since kernels/ptx was generated"
            )),
            Some(_) => {}
        }
    }
    if let Some(name) = recorded.keys().find(|n| !on_disk.contains_key(*n)) {
        fail(&format!(
            "kernels/{name} was removed since kernels/ptx was generated"
        ));
    }
    for (module, m) in manifest["modules"].as_object().into_iter().flatten() {
        let ptx = m["ptx"].as_str().unwrap_or_default();
        let bytes = std::fs::read(kernels.join("ptx").join(ptx)).unwrap_or_default();
        if m["ptx_sha256"].as_str() != Some(hex(&bytes).as_str()) {
            fail(&format!(
                "kernels/ptx/{ptx} (module {module}) does not match the manifest"
            ));
        }
    }
}
