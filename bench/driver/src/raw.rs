//! Raw results: one `key=value` line each, lists comma-separated. Plain text so a person can read
//! what a run measured, and `report` can redo the arithmetic.

use anyhow::{Context, anyhow};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

#[derive(Debug, Default, Clone)]
pub struct Raw {
    fields: BTreeMap<String, String>,
}

impl Raw {
    pub fn set(&mut self, key: &str, value: impl fmt::Display) {
        self.fields.insert(key.to_string(), value.to_string());
    }

    pub fn set_list<T: fmt::Display>(&mut self, key: &str, values: &[T]) {
        let joined: Vec<String> = values.iter().map(ToString::to_string).collect();
        self.fields.insert(key.to_string(), joined.join(","));
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Self { fields }
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    pub fn num(&self, key: &str) -> anyhow::Result<f64> {
        let v = self.get(key).ok_or_else(|| anyhow!("missing `{key}`"))?;
        v.parse().with_context(|| format!("`{key}` is not a number: {v:?}"))
    }

    pub fn opt_num(&self, key: &str) -> Option<f64> {
        self.get(key)?.parse().ok()
    }

    pub fn list(&self, key: &str) -> anyhow::Result<Vec<f64>> {
        let v = self.get(key).ok_or_else(|| anyhow!("missing `{key}`"))?;
        if v.is_empty() {
            return Ok(Vec::new());
        }
        v.split(',')
            .map(|x| x.parse().with_context(|| format!("`{key}` holds a non-number {x:?}")))
            .collect()
    }
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.fields {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}
