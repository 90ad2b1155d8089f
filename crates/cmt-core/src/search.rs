//! Where the bank is searched (DESIGN §1 steps 5–6): the bank's own CPU search, or, when θ
//! runs on the device backend, kernels/topk_aggregate.cu on the same device over a copy of
//! the bank, uploaded again only when the bank changed (an append, a delete, a compaction).
use cmt_memory::topk::device::DeviceBank;
use cmt_memory::{Bank, TopK};
use cmt_runtime::backend::DeviceBackend;
use cmt_runtime::cuda::Exec;
use cmt_runtime::{Backend, CpuBackend};
use std::path::PathBuf;
use std::sync::Mutex;

/// A search of a bank: the top `k` live entries of each question key, softmax weights over
/// their scores q·k_d/τ and the aggregated memory.
pub trait BankSearch: Send + Sync {
    /// As [`Bank::search`].
    fn search(
        &self,
        bank: &Bank,
        queries: &[f32],
        k: usize,
        tau: f32,
    ) -> cmt_memory::Result<Vec<TopK>>;
}

/// [`Bank::search`] on the CPU.
pub struct CpuSearch;

impl BankSearch for CpuSearch {
    fn search(
        &self,
        bank: &Bank,
        queries: &[f32],
        k: usize,
        tau: f32,
    ) -> cmt_memory::Result<Vec<TopK>> {
        bank.search(queries, k, tau)
    }
}

/// What identifies a bank's state: its directory, generation and record counts.
type BankState = (PathBuf, u64, u64, u64);

fn state_of(bank: &Bank) -> BankState {
    let s = bank.stats();
    (bank.dir().to_path_buf(), s.generation, s.records, s.live)
}

/// The search on a device through [`DeviceBank`], the bank's copy kept between searches.
pub struct DeviceSearch<E: Exec + Clone> {
    exec: E,
    copy: Mutex<Option<(BankState, DeviceBank<E>)>>,
}

impl<E: Exec + Clone> DeviceSearch<E> {
    /// Searches on `exec`'s device (nothing is uploaded before the first search).
    pub fn new(exec: E) -> Self {
        DeviceSearch {
            exec,
            copy: Mutex::new(None),
        }
    }
}

impl<E: Exec + Clone> BankSearch for DeviceSearch<E> {
    fn search(
        &self,
        bank: &Bank,
        queries: &[f32],
        k: usize,
        tau: f32,
    ) -> cmt_memory::Result<Vec<TopK>> {
        let state = state_of(bank);
        let mut copy = self.copy.lock().unwrap_or_else(|e| e.into_inner());
        if copy.as_ref().is_none_or(|(s, _)| *s != state) {
            *copy = Some((state, DeviceBank::upload(self.exec.clone(), bank)?));
        }
        let (_, dev) = copy.as_ref().expect("set just above");
        dev.search(queries, k, tau)
    }
}

/// The bank search that goes with θ's backend: the CPU's for the CPU, the device's for the
/// device backend.
pub trait SearchWith: Backend {
    /// A searcher on this backend's device.
    fn bank_search(&self) -> Box<dyn BankSearch>;
}

impl SearchWith for CpuBackend {
    fn bank_search(&self) -> Box<dyn BankSearch> {
        Box::new(CpuSearch)
    }
}

impl<E: Exec + Clone + 'static> SearchWith for DeviceBackend<E> {
    fn bank_search(&self) -> Box<dyn BankSearch> {
        Box::new(DeviceSearch::new(self.exec().clone()))
    }
}
