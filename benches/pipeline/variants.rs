//! What is compared within one benchmark run: builds of the hub (`--bins`) times environments (`--variant`), each
//! on top of the environment every hub process gets (`--hub-env`).

use anyhow::Context;

use crate::hub::Binaries;

#[derive(Debug, Clone)]
pub struct Variant {
    pub label: String,
    pub bins: Binaries,
    pub env: Vec<(String, String)>,
}

fn parse_env(pairs: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').with_context(|| format!("`{p}` is not KEY=VALUE"))?;
            Ok((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// Every build times every environment. `defaults` come first, so `--hub-env` and `--variant` override them.
pub fn variants(
    bins: &[String],
    defaults: &[(&str, &str)],
    hub_env: &[String],
    variants: &[String],
) -> anyhow::Result<Vec<Variant>> {
    let mut base_env = vec![("TIDINGS_SHUTDOWN_GRACE_SECONDS".to_owned(), "1".to_owned())];
    base_env.extend(defaults.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    for e in hub_env {
        base_env.extend(parse_env(e)?);
    }
    let mut builds = Vec::new();
    if bins.is_empty() || bins.iter().any(|b| b == ".") {
        builds.push(Binaries::this_checkout()?);
    }
    for dir in bins.iter().filter(|b| *b != ".") {
        builds.push(Binaries::from_dir(dir.as_ref())?);
    }
    let mut envs = Vec::new();
    for v in variants {
        let (label, pairs) = v.split_once(':').unwrap_or((v.as_str(), ""));
        envs.push((label.to_owned(), parse_env(pairs)?));
    }
    if envs.is_empty() {
        envs.push((String::new(), Vec::new()));
    }
    let mut out = Vec::new();
    for bins in &builds {
        for (label, env) in &envs {
            let mut full = base_env.clone();
            full.extend(env.iter().cloned());
            let label = match (builds.len() > 1, label.is_empty()) {
                (true, true) => bins.label.clone(),
                (true, false) => format!("{} {label}", bins.label),
                (false, _) => label.clone(),
            };
            out.push(Variant { label, bins: bins.clone(), env: full });
        }
    }
    Ok(out)
}

/// The environment as the processes see it: one entry per key, the last value given winning.
pub fn effective(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}
