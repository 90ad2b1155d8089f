//! Small per-step device tables (positions, row slots, ids) and attention's split partials,
//! reused across ops and steps.
use super::{i32s, DeviceBackend};
use crate::backend::Backend;
use crate::cuda::launch::transformer::RowTables;
use crate::cuda::Exec;
use crate::error::Result;

/// One cached table: the values it holds and its capacity in i32s.
pub(super) struct Table<B> {
    host: Vec<i32>,
    buf: B,
    cap: usize,
}

impl<E: Exec> DeviceBackend<E> {
    /// Device address of the table `role` holding `v`, uploading only when it changed. The
    /// address stays valid until the next call for the same role.
    pub(super) fn table(&self, role: &'static str, v: &[i32]) -> Result<u64> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        match tables.get_mut(role) {
            Some(t) if t.host == v => {}
            Some(t) if t.cap >= v.len() => {
                self.exec.write(&mut t.buf, 0, i32s(v))?;
                t.host.clear();
                t.host.extend_from_slice(v);
            }
            _ => {
                let cap = v.len().next_power_of_two().max(64);
                let mut buf = self.exec.alloc(cap * 4)?;
                self.exec.write(&mut buf, 0, i32s(v))?;
                tables.insert(
                    role,
                    Table {
                        host: v.to_vec(),
                        buf,
                        cap,
                    },
                );
            }
        }
        Ok(self.exec.ptr(&tables[role].buf))
    }

    /// The partials buffer, at least `n` values long.
    /// The step's row tables (kv_write and attention pass the same), as device addresses.
    pub(super) fn row_table_ptrs(&self, t: &RowTables) -> Result<(u64, u64)> {
        Ok((
            self.table("row_slot", &t.slot)?,
            self.table("row_pos", &t.pos)?,
        ))
    }

    pub(super) fn with_part<T>(&self, n: usize, f: impl FnOnce(u64) -> Result<T>) -> Result<T> {
        let mut part = self.part.lock().unwrap_or_else(|e| e.into_inner());
        if n > 0 && part.as_ref().is_none_or(|p| p.len < n) {
            *part = Some(self.zeros(n)?);
        }
        let ptr = part.as_ref().map_or(0, |p| self.ptr(p));
        f(ptr)
    }
}
