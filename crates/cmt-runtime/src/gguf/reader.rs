//! GGUF container parsing (v2 and v3): header, key/value metadata, tensor directory.
use super::quant::GgmlType;
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, fastest-varying first (GGUF order).
    pub dims: Vec<usize>,
    pub dtype: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A memory-mapped GGUF file with its parsed metadata and tensor directory.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    index: HashMap<String, usize>,
    mmap: Arc<Mmap>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Format {
            path: self.path.into(),
            offset: self.pos as u64,
            msg: msg.into(),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: {what} needs {n} bytes, {} left",
                self.buf.len() - self.pos
            ))),
        }
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count that must fit in what is left of the file, `min_item` bytes per item.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > left {
            self.pos = at;
            return Err(self.err(format!("{what} = {n} cannot fit in the {left} bytes left")));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let at = self.pos;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            self.pos = at;
            self.err(format!("{what} is not valid UTF-8"))
        })
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>("u8")?[0]),
            1 => Value::I8(self.array::<1>("i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => Value::Bool(self.array::<1>("bool")?[0] != 0),
            8 => Value::String(self.string("string")?),
            9 => {
                if depth > 4 {
                    return Err(self.err("arrays nested too deeply"));
                }
                let item_ty = self.u32("array item type")?;
                let n = self.count("array length", 1)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            other => {
                self.pos -= 4;
                return Err(self.err(format!("unknown metadata value type {other}")));
            }
        })
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and lives as long as `GgufFile`. A concurrent writer
        // truncating the file could fault; model files are not written while being served.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, mmap)
    }

    fn parse(path: &Path, mmap: Mmap) -> Result<GgufFile> {
        let mut c = Cursor {
            buf: &mmap,
            pos: 0,
            path,
        };
        let magic = c.array::<4>("magic")?;
        if &magic != MAGIC {
            c.pos = 0;
            return Err(c.err(format!(
                "not a GGUF file (magic {magic:02x?}, expected \"GGUF\")"
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            c.pos -= 4;
            return Err(c.err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = c.count("tensor count", 24)?;
        let n_kv = c.count("metadata count", 12)?;
        let mut metadata = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let v = c.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let at = c.pos;
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor n_dims")? as usize;
            if n_dims == 0 || n_dims > 4 {
                c.pos = at;
                return Err(c.err(format!("tensor `{name}` has {n_dims} dims (1..=4 allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dim")? as usize);
            }
            let ty_raw = c.u32("tensor type")?;
            let rel = c.u64("tensor offset")?;
            let dtype = GgmlType::from_u32(ty_raw).ok_or_else(|| {
                Error::tensor(path, &name, format!("ggml type {ty_raw} is not supported"))
            })?;
            infos.push((name, dims, dtype, rel));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = mmap.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut index = HashMap::with_capacity(infos.len());
        for (name, dims, dtype, rel) in infos {
            let n_el = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| Error::tensor(path, &name, format!("dims {dims:?} overflow")))?;
            let n_bytes = dtype.n_bytes(n_el).ok_or_else(|| {
                Error::tensor(
                    path,
                    &name,
                    format!(
                        "{} elements are not a whole number of {dtype:?} blocks",
                        n_el
                    ),
                )
            })? as u64;
            let offset = data_start.saturating_add(rel);
            if offset.checked_add(n_bytes).is_none_or(|end| end > file_len) {
                return Err(Error::Format {
                    path: path.into(),
                    offset,
                    msg: format!(
                        "tensor `{name}` ({n_bytes} bytes) runs past the end of the file ({file_len} bytes): truncated?"
                    ),
                });
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::tensor(
                    path,
                    &name,
                    "appears twice in the tensor directory",
                ));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                dtype,
                offset,
                n_bytes,
            });
        }
        Ok(GgufFile {
            path: path.into(),
            version,
            metadata,
            tensors,
            index,
            mmap: Arc::new(mmap),
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }

    /// The file's map and a tensor's byte range in it, for weights that are read in place
    /// (they keep the map alive after this `GgufFile` is dropped).
    pub fn mapped(&self, info: &TensorInfo) -> (Arc<Mmap>, std::ops::Range<usize>) {
        let start = info.offset as usize;
        (self.mmap.clone(), start..start + info.n_bytes as usize)
    }

    /// A tensor dequantised to f32, in row-major order (last GGUF dim slowest).
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; info.n_elements()];
        super::quant::dequantize(info.dtype, self.bytes(info), &mut out)
            .map_err(|msg| Error::tensor(&self.path, &info.name, msg))?;
        Ok(out)
    }
}
