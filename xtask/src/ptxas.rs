//! Runs ptxas on generated PTX (does this PTX assemble for the real GPUs?) and parses its
//! `-v` resource report: registers, shared memory, spills per entry point.
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub entry: String,
    pub sm: String,
    pub registers: u32,
    pub smem: u32,
    pub stack: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// Number just before `unit` in `line`, e.g. `num_before(l, "registers")`.
fn num_before(line: &str, unit: &str) -> Option<u32> {
    let i = line.find(unit)?;
    line[..i].split_whitespace().last()?.parse().ok()
}

pub fn check(ptxas: &Path, ptx: &Path, sm: &str) -> Result<Vec<Usage>> {
    let out = Command::new(ptxas)
        .arg(format!("-arch={sm}"))
        .args(["-v", "-o", "/dev/null"])
        .arg(ptx)
        .output()
        .with_context(|| format!("running {}", ptxas.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("ptxas -arch={sm} rejected {}:\n{log}", ptx.display());
    }
    let mut rows: Vec<Usage> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let entry = rest.split('\'').next().unwrap_or_default().to_string();
            rows.push(Usage {
                entry,
                sm: sm.to_string(),
                ..Default::default()
            });
        } else if let Some(u) = rows.last_mut() {
            if line.contains("spill stores") {
                u.stack = num_before(line, "bytes stack frame").unwrap_or(0);
                u.spill_stores = num_before(line, "bytes spill stores").unwrap_or(0);
                u.spill_loads = num_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("registers") {
                u.registers = num_before(line, "registers").unwrap_or(0);
                u.smem = num_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    Ok(rows)
}

pub fn print_table(rows: &[Usage]) {
    println!(
        "{:<36} {:<6} {:>5} {:>7} {:>6} {:>12}",
        "kernel", "arch", "regs", "smem B", "stack", "spill st/ld"
    );
    for u in rows {
        println!(
            "{:<36} {:<6} {:>5} {:>7} {:>6} {:>12}",
            u.entry,
            u.sm,
            u.registers,
            u.smem,
            u.stack,
            format!("{}/{}", u.spill_stores, u.spill_loads)
        );
    }
    let spills: Vec<_> = rows
        .iter()
        .filter(|u| u.spill_stores + u.spill_loads > 0)
        .collect();
    if !spills.is_empty() {
        println!(
            "warning: {} kernel/arch pairs spill registers",
            spills.len()
        );
    }
}
