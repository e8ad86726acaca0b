//! `genotype.json`: the writer (through serde), the reader with errors that name the field,
//! and the serde impls of [`Genotype`] (schema in the parent module's documentation).

use serde::Serialize;
use serde_json::{Map, Value};

use super::{field_err, CellGenotype, Genotype, GenotypeError, KeptEdge, KeptOp, FORMAT, VERSION};
use crate::space::{CellType, Node, Op, NUM_INTERMEDIATE};

#[derive(Serialize)]
struct EdgeOut<'a> {
    from: Node,
    to: Node,
    ops: &'a [KeptOp],
}

#[derive(Serialize)]
struct CellOut<'a> {
    edges: Vec<EdgeOut<'a>>,
    concat: Vec<Node>,
}

impl<'a> CellOut<'a> {
    fn new(cell: &'a CellGenotype) -> CellOut<'a> {
        CellOut {
            edges: cell
                .edges
                .iter()
                .map(|e| EdgeOut {
                    from: e.from,
                    to: Node::Inter(e.to),
                    ops: &e.ops,
                })
                .collect(),
            concat: cell.concat.iter().map(|&j| Node::Inter(j)).collect(),
        }
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: u64,
    space: &'a str,
    normal: CellOut<'a>,
    reduce: CellOut<'a>,
    darts: Option<String>,
}

impl Genotype {
    fn file_out(&self) -> FileOut<'_> {
        FileOut {
            format: FORMAT,
            version: VERSION,
            space: &self.space,
            normal: CellOut::new(&self.normal),
            reduce: CellOut::new(&self.reduce),
            darts: self.to_darts_string(),
        }
    }

    /// Pretty JSON in the documented schema (validates first).
    pub fn to_json(&self) -> Result<String, GenotypeError> {
        self.validate()?;
        serde_json::to_string_pretty(&self.file_out())
            .map_err(|e| GenotypeError::Json(e.to_string()))
    }

    /// Reads the documented JSON schema; errors name the offending field.
    pub fn from_json(text: &str) -> Result<Genotype, GenotypeError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| GenotypeError::Json(e.to_string()))?;
        Genotype::from_json_value(&v)
    }

    /// As [`Genotype::from_json`], from an already parsed JSON value.
    pub fn from_json_value(v: &Value) -> Result<Genotype, GenotypeError> {
        let obj = as_object(v, "(root)")?;
        check_keys(
            obj,
            "",
            &["format", "version", "space", "normal", "reduce", "darts"],
        )?;
        let format = as_str(get(obj, "", "format")?, "format")?;
        if format != FORMAT {
            return Err(field_err(
                "format",
                format!("expected \"{FORMAT}\", got \"{format}\""),
            ));
        }
        let version = get(obj, "", "version")?;
        if version.as_u64() != Some(VERSION) {
            return Err(field_err(
                "version",
                format!("unsupported version {version} (this build reads {VERSION})"),
            ));
        }
        let space = as_str(get(obj, "", "space")?, "space")?.to_string();
        let normal = cell_from_json(get(obj, "", "normal")?, "normal")?;
        let reduce = cell_from_json(get(obj, "", "reduce")?, "reduce")?;
        let g = Genotype {
            space,
            normal,
            reduce,
        };
        g.validate()?;
        match obj.get("darts") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                let d = Genotype::from_darts_string(s)
                    .map_err(|e| field_err("darts", e.to_string()))?;
                for ct in CellType::ALL {
                    if d.cell(ct).structure() != g.cell(ct).structure()
                        || d.cell(ct).concat != g.cell(ct).concat
                    {
                        return Err(field_err(
                            "darts",
                            format!("the DARTS string's {ct} cell differs from \"{ct}\""),
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(field_err(
                    "darts",
                    format!("expected a string or null, got {other}"),
                ))
            }
        }
        Ok(g)
    }
}

/// Serialises to the documented schema (so a genotype can be embedded in other serde
/// documents); an invalid genotype is a serialisation error.
impl Serialize for Genotype {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.validate().map_err(serde::ser::Error::custom)?;
        self.file_out().serialize(serializer)
    }
}

/// Deserialises the documented schema with the same checks as [`Genotype::from_json`].
impl<'de> serde::Deserialize<'de> for Genotype {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        Genotype::from_json_value(&v).map_err(serde::de::Error::custom)
    }
}

fn get<'a>(
    obj: &'a Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<&'a Value, GenotypeError> {
    obj.get(key)
        .ok_or_else(|| field_err(join(prefix, key), "missing field"))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn check_keys(
    obj: &Map<String, Value>,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), GenotypeError> {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(field_err(
                join(prefix, k),
                format!("unknown field (expected one of: {})", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, GenotypeError> {
    v.as_object()
        .ok_or_else(|| field_err(path, format!("expected an object, got {v}")))
}

fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, GenotypeError> {
    v.as_array()
        .ok_or_else(|| field_err(path, format!("expected an array, got {v}")))
}

fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, GenotypeError> {
    v.as_str()
        .ok_or_else(|| field_err(path, format!("expected a string, got {v}")))
}

fn node_from_json(v: &Value, path: &str) -> Result<Node, GenotypeError> {
    as_str(v, path)?
        .parse::<Node>()
        .map_err(|e| field_err(path, e.to_string()))
}

fn target_from_json(v: &Value, path: &str) -> Result<usize, GenotypeError> {
    match node_from_json(v, path)? {
        Node::Inter(j) => Ok(j),
        n => Err(field_err(
            path,
            format!(
                "an edge cannot go into the input node {n} (targets are n0..n{})",
                NUM_INTERMEDIATE - 1
            ),
        )),
    }
}

fn cell_from_json(v: &Value, path: &str) -> Result<CellGenotype, GenotypeError> {
    let obj = as_object(v, path)?;
    check_keys(obj, path, &["edges", "concat"])?;
    let mut cell = CellGenotype::default();
    let edges_path = join(path, "edges");
    for (i, ev) in as_array(get(obj, path, "edges")?, &edges_path)?
        .iter()
        .enumerate()
    {
        let p = format!("{edges_path}[{i}]");
        let eo = as_object(ev, &p)?;
        check_keys(eo, &p, &["from", "to", "ops"])?;
        let from = node_from_json(get(eo, &p, "from")?, &join(&p, "from"))?;
        let to = target_from_json(get(eo, &p, "to")?, &join(&p, "to"))?;
        let ops_path = join(&p, "ops");
        let mut ops = Vec::new();
        for (k, ov) in as_array(get(eo, &p, "ops")?, &ops_path)?.iter().enumerate() {
            let op_path = format!("{ops_path}[{k}]");
            let oo = as_object(ov, &op_path)?;
            check_keys(oo, &op_path, &["op", "relevance"])?;
            let name_path = join(&op_path, "op");
            let op = as_str(get(oo, &op_path, "op")?, &name_path)?
                .parse::<Op>()
                .map_err(|e| field_err(&name_path, e.to_string()))?;
            let relevance = match oo.get("relevance") {
                None | Some(Value::Null) => None,
                Some(r) => Some(r.as_f64().ok_or_else(|| {
                    field_err(
                        join(&op_path, "relevance"),
                        format!("expected a number or null, got {r}"),
                    )
                })?),
            };
            ops.push(KeptOp { op, relevance });
        }
        cell.edges.push(KeptEdge { from, to, ops });
    }
    let concat_path = join(path, "concat");
    for (i, nv) in as_array(get(obj, path, "concat")?, &concat_path)?
        .iter()
        .enumerate()
    {
        cell.concat
            .push(target_from_json(nv, &format!("{concat_path}[{i}]"))?);
    }
    Ok(cell)
}
