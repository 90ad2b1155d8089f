//! Dequantisation of every supported GGUF tensor type against the peer implementation in
//! gguf-py (`gguf.quants.dequantize`, the reference llama.cpp ships), on random blocks.
//! Skips with a message when python3 with the `gguf` package is not installed
//! (`.ci/run` installs it).
use cmt_runtime::gguf::{dequantize, GgmlType};
use half::f16;
use std::process::Command;

const TYPES: [(GgmlType, &str); 9] = [
    (GgmlType::F16, "F16"),
    (GgmlType::BF16, "BF16"),
    (GgmlType::Q4_0, "Q4_0"),
    (GgmlType::Q4_1, "Q4_1"),
    (GgmlType::Q5_0, "Q5_0"),
    (GgmlType::Q5_1, "Q5_1"),
    (GgmlType::Q8_0, "Q8_0"),
    (GgmlType::Q4K, "Q4_K"),
    (GgmlType::Q6K, "Q6_K"),
];

/// Random block bytes whose f16 scale fields hold small finite values (random bits there
/// could be NaN or inf, which says nothing about the layout).
fn random_blocks(ty: GgmlType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let (_, bb) = ty.block();
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut out = Vec::with_capacity(n_blocks * bb);
    for _ in 0..n_blocks {
        let mut b: Vec<u8> = (0..bb).map(|_| next() as u8).collect();
        let mut put = |at: usize| {
            let v = ((next() % 2000) as f32 / 1000.0 - 1.0) * 0.1;
            b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        };
        match ty {
            GgmlType::F16 | GgmlType::BF16 => {
                for i in (0..bb).step_by(2) {
                    put(i);
                }
            }
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put(0),
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => {
                put(0);
                put(2);
            }
            GgmlType::Q6K => put(208),
            GgmlType::F32 => {}
        }
        out.extend(b);
    }
    out
}

fn gguf_py_available() -> bool {
    Command::new("python3")
        .args(["-c", "import gguf.quants, numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_type_matches_gguf_py() {
    if !gguf_py_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI: python3 with the gguf package is needed (pip install gguf)");
        }
        eprintln!("SKIPPED: python3 with the `gguf` package is not installed");
        return;
    }
    let mut types = TYPES.to_vec();
    types.push((GgmlType::Q5K, "Q5_K"));
    let dir = tempfile::tempdir().unwrap();
    for (i, (ty, name)) in types.iter().enumerate() {
        let n_blocks = 24;
        let bytes = random_blocks(*ty, n_blocks, 1000 + i as u64);
        let src = dir.path().join(format!("{name}.bin"));
        let dst = dir.path().join(format!("{name}.f32"));
        std::fs::write(&src, &bytes).unwrap();
        let script = "import sys, numpy as np, gguf.quants as q\n\
                      from gguf import GGMLQuantizationType as T\n\
                      data = np.fromfile(sys.argv[1], dtype=np.uint8)\n\
                      q.dequantize(data, T[sys.argv[2]]).astype(np.float32).tofile(sys.argv[3])\n";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&src)
            .arg(name)
            .arg(&dst)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gguf-py on {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Vec<f32> = std::fs::read(&dst)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (be, _) = ty.block();
        let mut got = vec![f32::NAN; n_blocks * be];
        dequantize(*ty, &bytes, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: element count");
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "{name} element {j}: {g} vs gguf-py {w}"
            );
        }
    }
}
