//! JSON-lines metrics: one JSON object per line appended to `OUT/metrics.jsonl`.
//!
//! Each record has `event` (what happened: "info", "epoch", "step", "eval", ...), `time_s`
//! (seconds since the writer was created), `unix_ms` (wall clock), and the fields given.
//! Lines are written with a single `write` each on a file opened for appending, so a reader
//! (`tail -f`, a plotting script) never sees a partial line, and several runs can share a
//! directory without clobbering each other's records.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value};

/// Name of the metrics file under the output directory.
pub const FILE_NAME: &str = "metrics.jsonl";

/// Appends JSON lines to `OUT/metrics.jsonl`.
pub struct MetricsWriter {
    file: File,
    path: PathBuf,
    start: Instant,
}

impl MetricsWriter {
    /// Creates `dir` if needed and opens `dir/metrics.jsonl` for appending.
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(MetricsWriter {
            file,
            path,
            start: Instant::now(),
        })
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record: `event`, `time_s`, `unix_ms`, then the fields of `fields`, which
    /// must serialise to a JSON object (a struct or a map). Non-finite floats become null.
    pub fn record<T: Serialize>(&mut self, event: &str, fields: &T) -> io::Result<()> {
        let fields = serde_json::to_value(fields).map_err(io::Error::other)?;
        let fields = match fields {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("metrics fields must be an object, got {other}"),
                ))
            }
        };
        let mut obj = Map::new();
        obj.insert("event".into(), Value::from(event));
        obj.insert(
            "time_s".into(),
            Value::from((self.start.elapsed().as_secs_f64() * 1e3).round() / 1e3),
        );
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        obj.insert("unix_ms".into(), Value::from(unix_ms));
        for (k, v) in fields {
            obj.insert(k, v);
        }
        let mut line = serde_json::to_vec(&Value::Object(obj)).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Step {
        epoch: u32,
        loss: f64,
        acc: f64,
    }

    #[test]
    fn appends_one_object_per_line() {
        let dir = std::env::temp_dir().join(format!("bayesnas-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut m = MetricsWriter::create(&dir.join("nested")).unwrap();
            m.record(
                "step",
                &Step {
                    epoch: 1,
                    loss: 0.5,
                    acc: 0.75,
                },
            )
            .unwrap();
            m.record("nan", &serde_json::json!({"loss": f64::NAN}))
                .unwrap();
            assert!(m.record("bad", &3).is_err());
        }
        {
            let mut m = MetricsWriter::create(&dir.join("nested")).unwrap();
            m.record("end", &()).unwrap();
        }
        let text = std::fs::read_to_string(dir.join("nested").join(FILE_NAME)).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["event"], "step");
        assert_eq!(lines[0]["epoch"], 1);
        assert_eq!(lines[0]["acc"], 0.75);
        assert!(lines[0]["time_s"].is_number() && lines[0]["unix_ms"].is_number());
        assert!(lines[1]["loss"].is_null());
        assert_eq!(lines[2]["event"], "end");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
