//! GPU memory per pipeline stage (setup, training, evaluation), read from
//! libtorch's caching allocator, the one pool host and plugins share.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use taskweave_kernels::memory::{memory_stats, reset_peak_memory, MemoryStats};
use tch::Device;

/// Records allocated, reserved and peak bytes per stage; does nothing on CPU.
pub struct MemoryLog {
    device: Option<usize>,
    /// Per stage, the highest values seen over all of its occurrences.
    stages: BTreeMap<&'static str, MemoryStats>,
}

fn to_json(m: &MemoryStats) -> Value {
    json!({"allocated": m.allocated, "reserved": m.reserved,
           "peak_allocated": m.peak_allocated, "peak_reserved": m.peak_reserved})
}

impl MemoryLog {
    /// A log for `device` (inactive for the CPU, or when the allocator's
    /// statistics cannot be read, which is logged once).
    pub fn new(device: Device) -> MemoryLog {
        let device = match device {
            Device::Cuda(n) => match crate::device::init_allocator(n)
                .map_err(|e| e.to_string())
                .and_then(|()| memory_stats(n).map_err(|e| e.to_string()))
            {
                Ok(_) => Some(n),
                Err(e) => {
                    tracing::warn!("GPU memory statistics are unavailable: {e}");
                    None
                }
            },
            _ => None,
        };
        MemoryLog {
            device,
            stages: BTreeMap::new(),
        }
    }

    /// Starts a stage: the peaks count from here.
    pub fn begin(&self) {
        if let Some(d) = self.device {
            let _ = reset_peak_memory(d);
        }
    }

    /// Ends stage `name`: its statistics as JSON (`None` on CPU).
    pub fn end(&mut self, name: &'static str) -> Option<Value> {
        let m = memory_stats(self.device?).ok()?;
        let entry = self.stages.entry(name).or_default();
        for (max, v) in [
            (&mut entry.allocated, m.allocated),
            (&mut entry.reserved, m.reserved),
            (&mut entry.peak_allocated, m.peak_allocated),
            (&mut entry.peak_reserved, m.peak_reserved),
        ] {
            *max = (*max).max(v);
        }
        Some(to_json(&m))
    }

    /// Every stage's highest values, as JSON (`null` on CPU).
    pub fn summary(&self) -> Value {
        if self.device.is_none() {
            return Value::Null;
        }
        Value::Object(
            self.stages
                .iter()
                .map(|(k, v)| (k.to_string(), to_json(v)))
                .collect(),
        )
    }

    /// One line for the end of a run, or `None` on CPU.
    pub fn line(&self) -> Option<String> {
        self.device?;
        let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k} peak {:.1} MiB allocated, {:.1} MiB reserved",
                    mib(v.peak_allocated),
                    mib(v.peak_reserved)
                )
            })
            .collect();
        Some(format!("GPU memory: {}", parts.join("; ")))
    }
}
