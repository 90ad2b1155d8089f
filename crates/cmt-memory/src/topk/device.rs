//! The bank's search on a device (`--device cuda`): kernels/topk_aggregate.cu's scan and
//! combine over a copy of the bank's keys, live bits and memories, uploaded once per bank
//! generation. Same scores, selection (ties: lower id first), softmax and aggregate as
//! [`crate::Bank::search`]; the emulated tests compare the two.
use super::launch::{self as geo, ScanSplit};
use super::TopK;
use crate::error::{Error, Result};
use crate::keys::KeyDtype;
use crate::store::Bank;
use crate::types::MemDtype;
use cmt_runtime::cuda::{DType, Exec};

/// A bank's search state on a device.
pub struct DeviceBank<E: Exec> {
    exec: E,
    name: String,
    generation: u64,
    /// Entry id of every row (rows are in id order, as in the bank).
    ids: Vec<u64>,
    n: usize,
    live_count: usize,
    r: usize,
    td: usize,
    key_dt: DType,
    mem_dt: DType,
    /// Keys column-major, [r][n], in `key_dt`; one live bit per row; memories [n][td] in
    /// `mem_dt` (zeros for deleted rows, which the scan never selects).
    keys: E::Buf,
    live: E::Buf,
    mem: E::Buf,
}

fn dtype_bytes(dt: DType, v: &[f32]) -> Vec<u8> {
    match dt {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::Bf16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    }
}

fn device(e: cmt_runtime::cuda::CudaError) -> Error {
    Error::Invalid(format!("memory bank search on the device: {e}"))
}

impl<E: Exec> DeviceBank<E> {
    /// Copies `bank`'s keys, live bits and memories to the device. Keys and memories keep
    /// the bank's own types (bf16 stays bf16: the kernels widen it exactly).
    pub fn upload(exec: E, bank: &Bank) -> Result<Self> {
        let st = bank.stats();
        let keys = bank.keys();
        let (n, r, td) = (keys.len(), keys.r(), st.t * st.d);
        let key_dt = match keys.dtype() {
            KeyDtype::F32 => DType::F32,
            KeyDtype::Bf16 => DType::Bf16,
        };
        let mem_dt = match st.mem_dtype {
            MemDtype::F32 => DType::F32,
            MemDtype::Bf16 => DType::Bf16,
        };
        let mut colmajor = vec![0.0f32; r * n];
        let mut live = vec![0u32; n.div_ceil(32).max(1)];
        let mut mem = vec![0.0f32; n * td];
        for row in 0..n {
            for (j, v) in keys.key(row).into_iter().enumerate() {
                colmajor[j * n + row] = v;
            }
            if keys.is_live(row) {
                live[row / 32] |= 1 << (row % 32);
                let e = bank.get(keys.ids()[row])?.ok_or_else(|| {
                    Error::Invalid(format!("entry {} is live but unreadable", keys.ids()[row]))
                })?;
                mem[row * td..(row + 1) * td].copy_from_slice(&e.memory.to_f32_vec());
            }
        }
        let live_bytes: Vec<u8> = live.iter().flat_map(|w| w.to_le_bytes()).collect();
        Ok(DeviceBank {
            keys: exec
                .upload(&dtype_bytes(key_dt, &colmajor))
                .map_err(device)?,
            live: exec.upload(&live_bytes).map_err(device)?,
            mem: exec.upload(&dtype_bytes(mem_dt, &mem)).map_err(device)?,
            exec,
            name: bank.name(),
            generation: st.generation,
            ids: keys.ids().to_vec(),
            n,
            live_count: keys.live_count(),
            r,
            td,
            key_dt,
            mem_dt,
        })
    }

    /// The bank generation this copy was made from (a later append or delete makes it stale).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// As [`Bank::search`]: the top `k` live entries of every question in `queries` (nq × r),
    /// their scores q·k_d/τ, softmax weights and aggregated memory.
    pub fn search(&self, queries: &[f32], k: usize, tau: f32) -> Result<Vec<TopK>> {
        super::combine::check_tau(tau)?;
        if !queries.len().is_multiple_of(self.r) || queries.is_empty() {
            return Err(Error::Invalid(format!(
                "{} query values are not whole keys of width {}",
                queries.len(),
                self.r
            )));
        }
        if k == 0 || k > super::MAX_K {
            return Err(Error::Invalid(format!(
                "k = {k} is outside 1..={}",
                super::MAX_K
            )));
        }
        if self.live_count == 0 {
            return Err(Error::Empty {
                bank: self.name.clone(),
            });
        }
        let nq = queries.len() / self.r;
        let e = &self.exec;
        let q = e
            .upload(&dtype_bytes(DType::F32, queries))
            .map_err(device)?;
        let split = ScanSplit::new(self.n);
        let ncand = split.candidates(k);
        let cand_scores = e.alloc(nq * ncand * 4).map_err(device)?;
        let cand_rows = e.alloc(nq * ncand * 4).map_err(device)?;
        let out_rows = e.alloc(nq * k * 4).map_err(device)?;
        let out_scores = e.alloc(nq * k * 4).map_err(device)?;
        let out_weights = e.alloc(nq * k * 4).map_err(device)?;
        let out_agg = e.alloc(nq * self.td * 4).map_err(device)?;
        let scan = geo::scan_split(
            self.key_dt,
            e.ptr(&cand_scores),
            e.ptr(&cand_rows),
            e.ptr(&self.keys),
            self.n,
            e.ptr(&self.live),
            self.n,
            e.ptr(&q),
            nq,
            self.r,
            k,
            split,
        )
        .map_err(device)?;
        let comb = geo::combine(
            self.mem_dt,
            e.ptr(&out_rows),
            e.ptr(&out_scores),
            e.ptr(&out_weights),
            e.ptr(&out_agg),
            e.ptr(&cand_scores),
            e.ptr(&cand_rows),
            ncand,
            nq,
            k,
            tau,
            e.ptr(&self.mem),
            self.td,
        )
        .map_err(device)?;
        for l in [&scan, &comb] {
            // SAFETY: every pointer is a live buffer of this executor sized above for the
            // shapes passed to the same launch builder: keys r·n, live ⌈n/32⌉ words, queries
            // nq·r, candidates nq·ncand, outputs nq·k and nq·td, memories n·td.
            unsafe { e.launch(l) }.map_err(device)?;
        }
        let words = |b: &E::Buf| -> Result<Vec<[u8; 4]>> {
            Ok(e.download(b)
                .map_err(device)?
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect())
        };
        let rows: Vec<i32> = words(&out_rows)?
            .into_iter()
            .map(i32::from_le_bytes)
            .collect();
        let f32s = |b: &E::Buf| -> Result<Vec<f32>> {
            Ok(words(b)?.into_iter().map(f32::from_le_bytes).collect())
        };
        let (scores, weights, agg) = (f32s(&out_scores)?, f32s(&out_weights)?, f32s(&out_agg)?);
        let mut out = Vec::with_capacity(nq);
        for qi in 0..nq {
            let sel: Vec<usize> = (0..k).filter(|&j| rows[qi * k + j] >= 0).collect();
            out.push(TopK {
                ids: sel
                    .iter()
                    .map(|&j| self.ids[rows[qi * k + j] as usize])
                    .collect(),
                scores: sel.iter().map(|&j| scores[qi * k + j]).collect(),
                weights: sel.iter().map(|&j| weights[qi * k + j]).collect(),
                aggregate: agg[qi * self.td..(qi + 1) * self.td].to_vec(),
            });
        }
        Ok(out)
    }
}
