//! The provisioned Grafana dashboards, read the way Grafana reads them.
//!
//! Without a stack: every variable an expression uses (panel targets, annotation queries,
//! variable queries, panel titles) is one the dashboard defines or one of Grafana's
//! built-ins, and every panel of a 0/1 metric maps 0 and 1 to words.
//!
//! Against the live native stack's Prometheus: each variable takes only values its own
//! definition gives (a query variable's `label_values(...)` is run for its real values, a
//! custom one has its options, "All" where the variable offers it). Every query must run
//! with each of them. A panel must show data as the dashboard opens and, for each variable
//! it uses, with at least one real value (so a label the variable's values do not name, which
//! "All" = `.*` would still match, fails); values it shows nothing for are printed. An
//! annotation query must select series the same way (whether a restart happened in the last
//! hour is not the dashboard's to say). Panels marked "Compose only" (cAdvisor runs under
//! Docker Compose) only have to run.

use anyhow::{bail, ensure, Context, Result};
use e2e::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Grafana's built-in variables and what they stand for here: the dashboards open on the
/// last hour, which a panel of about 1000 points divides into 3.6 s steps, rounded by Grafana
/// to `$__interval` = 5 s (above the datasource's `timeInterval`, the 2 s scrape interval);
/// `$__rate_interval` is max(`$__interval` + 2 s, 4 × 2 s) = 8 s.
const BUILT_INS: [(&str, &str); 6] = [
    ("__rate_interval", "8s"),
    ("__interval", "5s"),
    ("__interval_ms", "5000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

/// Metrics whose value is 0 or 1: a panel that plots one as it is must say what 0 and 1 mean.
const ZERO_ONE: [&str; 6] = [
    "binance_ws_connected",
    "sync_in_sync",
    "service_up",
    "service_backoff_restarting",
    "postgres_up",
    "up",
];

/// One dashboard as the tests need it.
struct Dashboard {
    title: String,
    variables: Vec<Variable>,
    panels: Vec<Panel>,
    annotations: Vec<(String, String)>, // (name, expr)
}

struct Panel {
    title: String,
    exprs: Vec<String>,
    compose_only: bool,
    json: Value,
}

struct Variable {
    name: String,
    kind: VariableKind,
    /// Grafana escapes a value as a regex when the variable is multi-value or has "All".
    regex_format: bool,
    /// What "All" stands for, when the variable offers it: its `allValue`, or None for
    /// Grafana's default (every value, as a regex alternation).
    all: Option<Option<String>>,
}

enum VariableKind {
    /// `label_values(<selector>, <label>)`.
    LabelValues { selector: String, label: String },
    /// custom, constant, interval and textbox variables: the values the definition lists.
    Fixed(Vec<String>),
}

fn load_dashboards() -> Result<Vec<Dashboard>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(root().join("grafana/dashboards"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    paths.sort();
    for path in paths {
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{}", path.display()))?;
        out.push(parse_dashboard(&json).with_context(|| format!("{}", path.display()))?);
    }
    ensure!(out.len() >= 6, "{} dashboards", out.len());
    Ok(out)
}

fn parse_dashboard(json: &Value) -> Result<Dashboard> {
    let title = json["title"].as_str().unwrap_or_default().to_string();
    let mut variables = Vec::new();
    for v in json["templating"]["list"].as_array().into_iter().flatten() {
        variables.push(parse_variable(v).with_context(|| format!("{title}: variable {v}"))?);
    }
    let mut panels = Vec::new();
    collect_panels(&json["panels"], &mut panels)?;
    let mut annotations = Vec::new();
    for a in json["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            let name = a["name"].as_str().unwrap_or_default();
            annotations.push((name.to_string(), expr.to_string()));
        }
    }
    Ok(Dashboard {
        title,
        variables,
        panels,
        annotations,
    })
}

/// Panels, including those inside collapsed rows.
fn collect_panels(list: &Value, out: &mut Vec<Panel>) -> Result<()> {
    for p in list.as_array().into_iter().flatten() {
        collect_panels(&p["panels"], out)?;
        let title = p["title"].as_str().unwrap_or_default().to_string();
        let mut exprs = Vec::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str();
            exprs.push(
                expr.with_context(|| format!("{title}: target without expr"))?
                    .to_string(),
            );
        }
        out.push(Panel {
            compose_only: title.contains("Compose only"),
            title,
            exprs,
            json: p.clone(),
        });
    }
    Ok(())
}

fn parse_variable(v: &Value) -> Result<Variable> {
    let name = v["name"].as_str().context("no name")?.to_string();
    let query = match &v["query"] {
        Value::String(s) => s.clone(),
        q => q["query"].as_str().unwrap_or_default().to_string(),
    };
    let kind = match v["type"].as_str().unwrap_or_default() {
        "query" => {
            if v["regex"].as_str().is_some_and(|r| !r.is_empty()) {
                bail!("a variable regex is not modelled by this test");
            }
            let args = query
                .trim()
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .with_context(|| {
                    format!("only label_values(<selector>, <label>) is modelled, not {query}")
                })?;
            let (selector, label) = args
                .rsplit_once(',')
                .context("label_values without a selector")?;
            VariableKind::LabelValues {
                selector: selector.trim().to_string(),
                label: label.trim().to_string(),
            }
        }
        "custom" => {
            let options: Vec<String> = v["options"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o["value"].as_str())
                .filter(|o| *o != "$__all")
                .map(String::from)
                .collect();
            if options.is_empty() {
                VariableKind::Fixed(split_list(&query))
            } else {
                VariableKind::Fixed(options)
            }
        }
        "interval" => VariableKind::Fixed(split_list(&query)),
        "constant" | "textbox" => VariableKind::Fixed(vec![query]),
        other => bail!("variable type {other:?} is not modelled by this test"),
    };
    let include_all = v["includeAll"].as_bool().unwrap_or(false);
    Ok(Variable {
        name,
        kind,
        regex_format: include_all || v["multi"].as_bool().unwrap_or(false),
        all: include_all.then(|| v["allValue"].as_str().map(String::from)),
    })
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

/// A variable reference in a text: `$name`, `${name}`, `${name:format}` or `[[name]]`,
/// as Grafana's template service finds them. `(start, end, name, format)`.
type Reference = (usize, usize, String, Option<String>);

fn references(text: &str) -> Vec<Reference> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
            if let Some(len) = text[i + 2..].find('}') {
                let inner = &text[i + 2..i + 2 + len];
                let (name, format) = match inner.split_once(':') {
                    Some((n, f)) => (n, Some(f.to_string())),
                    None => (inner, None),
                };
                let name = name.split('.').next().unwrap_or_default();
                out.push((i, i + 3 + len, name.to_string(), format));
                i += 3 + len;
                continue;
            }
        } else if b[i] == b'$' && b.get(i + 1).is_some_and(|c| word(*c)) {
            let end = (i + 1..b.len()).find(|j| !word(b[*j])).unwrap_or(b.len());
            out.push((i, end, text[i + 1..end].to_string(), None));
            i = end;
            continue;
        } else if b[i..].starts_with(b"[[") {
            if let Some(len) = text[i + 2..].find("]]") {
                let inner = &text[i + 2..i + 2 + len];
                let (name, format) = match inner.split_once(':') {
                    Some((n, f)) => (n, Some(f.to_string())),
                    None => (inner, None),
                };
                if !name.is_empty() && name.bytes().all(word) {
                    out.push((i, i + 4 + len, name.to_string(), format));
                    i += 4 + len;
                    continue;
                }
            }
        }
        i += 1;
    }
    // `$1` in label_replace is a regex group, not a variable (Grafana leaves it alone too)
    out.retain(|(_, _, name, _)| !name.bytes().all(|c| c.is_ascii_digit()));
    out
}

/// Every text of a dashboard Grafana interpolates, with where it is.
fn interpolated_texts(d: &Dashboard) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in &d.variables {
        if let VariableKind::LabelValues { selector, .. } = &v.kind {
            out.push((format!("variable {}", v.name), selector.clone()));
        }
    }
    for p in &d.panels {
        out.push((format!("{} (title)", p.title), p.title.clone()));
        for e in &p.exprs {
            out.push((p.title.clone(), e.clone()));
        }
    }
    for (name, expr) in &d.annotations {
        out.push((format!("annotation {name}"), expr.clone()));
    }
    out
}

/// Variables used but neither defined by the dashboard nor built into Grafana.
fn undefined_variables(d: &Dashboard) -> Vec<String> {
    let defined: BTreeSet<&str> = d.variables.iter().map(|v| v.name.as_str()).collect();
    let mut out = Vec::new();
    for (place, text) in interpolated_texts(d) {
        for (_, _, name, _) in references(&text) {
            let built_in = BUILT_INS.iter().any(|(b, _)| *b == name);
            if name.starts_with("__") && !built_in {
                out.push(format!(
                    "{} / {place}: ${name} is not a built-in this test models",
                    d.title
                ));
            } else if !built_in && !defined.contains(name.as_str()) {
                out.push(format!("{} / {place}: ${name} is not defined", d.title));
            }
        }
    }
    out
}

/// Whether `expr` plots a 0/1 metric as it is (bare, or under min/max), not a count of them.
fn plots_zero_one(expr: &str) -> bool {
    let mut e = expr.trim();
    while let Some(inner) = strip_min_max(e) {
        e = inner;
    }
    let name_end = e.find('{').unwrap_or(e.len());
    let rest = &e[name_end..];
    ZERO_ONE.contains(&&e[..name_end])
        && (rest.is_empty()
            || (rest.starts_with('{') && rest.ends_with('}') && rest.matches('}').count() == 1))
}

/// `min(x)`, `max by (a, b) (x)` and the like without the aggregation: `x`.
fn strip_min_max(e: &str) -> Option<&str> {
    let mut rest = e
        .strip_prefix("min")
        .or_else(|| e.strip_prefix("max"))?
        .trim_start();
    if let Some(r) = rest.strip_prefix("by") {
        let r = r.trim_start().strip_prefix('(')?;
        rest = r[r.find(')')? + 1..].trim_start();
    }
    Some(rest.strip_prefix('(')?.strip_suffix(')')?.trim())
}

/// Whether a panel maps both 0 and 1 to a text.
fn maps_zero_and_one(panel: &Value) -> bool {
    let mappings = panel["fieldConfig"]["defaults"]["mappings"].as_array();
    ["0", "1"].iter().all(|k| {
        mappings.into_iter().flatten().any(|m| {
            m["type"] == "value"
                && m["options"][k]["text"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty())
        })
    })
}

#[test]
fn references_are_found_as_grafana_finds_them() {
    let names: Vec<String> = references(
        r#"rate(x{a=~"$service", b="${symbol:raw}", c="[[stream]]"}[$__rate_interval]) + label_replace(y, "s", "$1", "t", "(.+)")"#,
    )
    .into_iter()
    .map(|r| r.2)
    .collect();
    assert_eq!(names, ["service", "symbol", "stream", "__rate_interval"]);
}

#[test]
fn an_undefined_variable_is_caught() -> Result<()> {
    // the Binance dashboard before issue 11: a restart annotation on $service, no variables
    let dash = parse_dashboard(&serde_json::json!({
        "title": "Binance",
        "templating": { "list": [] },
        "annotations": { "list": [{ "name": "Restarts",
            "expr": "sum by (service) (changes(service_restarts_total{service=~\"$service\"}[1m])) > 0" }] },
        "panels": [{ "title": "Requests", "targets": [{ "expr": "rate(binance_requests_total[$__rate_interval])" }] }]
    }))?;
    assert_eq!(
        undefined_variables(&dash),
        ["Binance / annotation Restarts: $service is not defined"]
    );
    Ok(())
}

#[test]
fn zero_one_panels_are_recognised() {
    assert!(plots_zero_one("min by (stream) (binance_ws_connected)"));
    assert!(plots_zero_one(r#"up{tier="app", service=~"$service"}"#));
    assert!(plots_zero_one("max(postgres_up)"));
    assert!(!plots_zero_one(r#"sum(up{tier="app"})"#));
    assert!(!plots_zero_one("sum(sync_in_sync) / count(sync_in_sync)"));
    assert!(!plots_zero_one(
        "max by (service) (service_heartbeat_age_seconds)"
    ));
}

#[test]
fn every_variable_a_dashboard_uses_is_defined() -> Result<()> {
    let undefined: Vec<String> = load_dashboards()?
        .iter()
        .flat_map(undefined_variables)
        .collect();
    ensure!(
        undefined.is_empty(),
        "variables used but not defined: {undefined:#?}"
    );
    Ok(())
}

#[test]
fn every_zero_one_panel_maps_its_values_to_words() -> Result<()> {
    let mut missing = Vec::new();
    for d in load_dashboards()? {
        for p in &d.panels {
            if p.exprs.iter().any(|e| plots_zero_one(e)) && !maps_zero_and_one(&p.json) {
                missing.push(format!("{} / {}", d.title, p.title));
            }
        }
    }
    ensure!(
        missing.is_empty(),
        "0/1 panels without value mappings for 0 and 1: {missing:#?}"
    );
    Ok(())
}

/// An instant query; the error names Prometheus' own complaint.
async fn query(client: &reqwest::Client, expr: &str) -> Result<Vec<Value>> {
    let body: Value = client
        .get(format!("{PROMETHEUS}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await?
        .json()
        .await?;
    if body["status"] != "success" {
        bail!("{}", body["error"].as_str().unwrap_or("query failed"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// A value as Grafana's Prometheus datasource writes it into a query.
fn format_value(v: &Variable, value: &str) -> String {
    if !v.regex_format {
        return value.replace('\\', "\\\\");
    }
    let mut out = String::new();
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                out.push_str("\\\\");
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// What each variable can be: (shown as, written into a query). Values come from the
/// variable's own definition; "All" is one of them when the variable offers it.
type Choices = BTreeMap<String, Vec<(String, String)>>;

async fn resolve(client: &reqwest::Client, d: &Dashboard) -> Result<Choices> {
    let mut choices = Choices::new();
    for v in &d.variables {
        let values: Vec<String> = match &v.kind {
            VariableKind::Fixed(values) => values.clone(),
            VariableKind::LabelValues { selector, label } => {
                let selector = substitute(selector, &defaults(&choices))?;
                let q = format!("count by ({label}) ({selector})");
                let rows = query(client, &q)
                    .await
                    .with_context(|| format!("{}: variable {}: {q}", d.title, v.name))?;
                let set: BTreeSet<String> = rows
                    .iter()
                    .filter_map(|r| r["metric"][label.as_str()].as_str())
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                set.into_iter().collect()
            }
        };
        ensure!(
            !values.is_empty(),
            "{}: variable {} has no value on the running stack",
            d.title,
            v.name
        );
        let mut c: Vec<(String, String)> = Vec::new();
        if let Some(all) = &v.all {
            let written = match all {
                Some(all_value) => all_value.clone(),
                None => format!(
                    "({})",
                    values
                        .iter()
                        .map(|x| format_value(v, x))
                        .collect::<Vec<_>>()
                        .join("|")
                ),
            };
            c.push(("All".into(), written));
        }
        c.extend(values.iter().map(|x| (x.clone(), format_value(v, x))));
        choices.insert(v.name.clone(), c);
    }
    Ok(choices)
}

/// A value for each variable: (shown as, written into a query).
type Setting = BTreeMap<String, (String, String)>;

/// Each variable at its first choice ("All" where offered, as the dashboards open).
fn defaults(choices: &Choices) -> Setting {
    choices
        .iter()
        .map(|(k, c)| (k.clone(), c[0].clone()))
        .collect()
}

/// The settings a set of texts is tried with: every variable at its default, then each
/// variable the texts use at each of its choices in turn.
fn settings(texts: &[String], choices: &Choices) -> Vec<Setting> {
    let used: BTreeSet<String> = texts
        .iter()
        .flat_map(|t| references(t))
        .map(|r| r.2)
        .collect();
    let mut out = vec![defaults(choices)];
    for name in used.iter().filter(|n| choices.contains_key(*n)) {
        for choice in choices[name].iter().skip(1) {
            let mut s = defaults(choices);
            s.insert(name.clone(), choice.clone());
            out.push(s);
        }
    }
    out
}

/// The text with every variable replaced; an undefined one is an error, never a guess.
fn substitute(text: &str, setting: &Setting) -> Result<String> {
    let mut out = String::new();
    let mut last = 0;
    for (start, end, name, format) in references(text) {
        out.push_str(&text[last..start]);
        let value = match (
            BUILT_INS.iter().find(|(b, _)| *b == name),
            setting.get(&name),
        ) {
            (Some((_, v)), _) => (*v).to_string(),
            (None, Some((shown, written))) => match format.as_deref() {
                None => written.clone(),
                Some("raw") => shown.clone(),
                Some(f) => bail!("${{{name}:{f}}}: format not modelled by this test"),
            },
            (None, None) => bail!("${name} is not defined"),
        };
        out.push_str(&value);
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

fn describe(setting: &Setting, texts: &[String]) -> String {
    let used: BTreeSet<String> = texts
        .iter()
        .flat_map(|t| references(t))
        .map(|r| r.2)
        .collect();
    let parts: Vec<String> = setting
        .iter()
        .filter(|(k, _)| used.contains(*k))
        .map(|(k, (shown, _))| format!("{k}={shown}"))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(", "))
    }
}

/// Vector selectors (`name{...}`) of an expression, to check that an annotation's query
/// names series that exist even while no event is happening.
fn selectors(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(open) = expr[i..].find('{').map(|p| p + i) {
        let start = (0..open)
            .rev()
            .take_while(|j| b[*j].is_ascii_alphanumeric() || b[*j] == b'_' || b[*j] == b':')
            .last()
            .unwrap_or(open);
        let Some(close) = expr[open..].find('}').map(|p| p + open) else {
            break;
        };
        out.push(expr[start..=close].to_string());
        i = close + 1;
    }
    out
}

#[test]
fn selectors_are_found() {
    assert_eq!(
        selectors(
            r#"sum by (service) (changes(service_restarts_total{service=~"$service"}[1m])) > 0"#
        ),
        [r#"service_restarts_total{service=~"$service"}"#]
    );
}

/// What a query set must do: a panel show data, an annotation select series.
#[derive(Clone, Copy, PartialEq)]
enum Due {
    Data,
    Series,
    Nothing,
}

/// Runs the dashboards' queries against Prometheus and collects what is wrong.
struct Checker {
    client: reqwest::Client,
    /// query -> whether it returned data, or Prometheus' error
    results: HashMap<String, std::result::Result<bool, String>>,
    failures: Vec<String>,
    notes: Vec<String>,
}

impl Checker {
    async fn has_data(&mut self, q: &str) -> std::result::Result<bool, String> {
        if !self.results.contains_key(q) {
            let r = query(&self.client, q)
                .await
                .map(|r| !r.is_empty())
                .map_err(|e| format!("{e:#}"));
            self.results.insert(q.to_string(), r);
        }
        self.results[q].clone()
    }

    /// Whether the queries, as written for `setting`, do what is due; errors are failures.
    async fn delivers(
        &mut self,
        place: &str,
        exprs: &[String],
        setting: &Setting,
        due: Due,
    ) -> Result<bool> {
        let (mut data, mut series) = (false, true);
        for expr in exprs {
            let q = substitute(expr, setting)?;
            match self.has_data(&q).await {
                Ok(d) => data |= d,
                Err(e) => self.failures.push(format!("{place}: {q}: {e}")),
            }
            for s in selectors(&q).iter().filter(|_| due == Due::Series) {
                series &= self.has_data(&format!("count({s})")).await == Ok(true);
            }
        }
        Ok(match due {
            Due::Data => data,
            Due::Series => series,
            Due::Nothing => true,
        })
    }

    /// Runs `exprs` with every setting: what is due must hold as the dashboard opens and,
    /// for each variable they use, with at least one real value.
    async fn check(
        &mut self,
        place: &str,
        exprs: &[String],
        choices: &Choices,
        due: Due,
    ) -> Result<()> {
        let mut shown: BTreeMap<String, bool> = references(&exprs.join(" "))
            .into_iter()
            .filter(|r| choices.contains_key(&r.2))
            .map(|r| (r.2, false))
            .collect();
        for (i, setting) in settings(exprs, choices).into_iter().enumerate() {
            let ok = self.delivers(place, exprs, &setting, due).await?;
            let with = describe(&setting, exprs);
            if !ok && i == 0 {
                self.failures
                    .push(format!("{place}{with}: nothing, as the dashboard opens"));
            } else if !ok {
                self.notes.push(format!("{place}{with}"));
            }
            for (var, any) in shown.iter_mut() {
                *any |= ok && setting[var].0 != "All";
            }
        }
        for (var, _) in shown.iter().filter(|(_, any)| !**any) {
            self.failures
                .push(format!("{place}: nothing with any value of ${var}"));
        }
        Ok(())
    }
}

#[tokio::test]
#[ignore = "needs the native stack; `make test` runs it"]
async fn every_dashboard_panel_returns_data_on_the_running_stack() -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    // Rates need a few scrapes, and some series appear only after their source's first
    // reading (librdkafka statistics, restart-watcher's consumer-group lag): wait until every
    // platform service has run for a minute (whatever the scrape interval).
    eventually(
        "every platform service up for a minute",
        Duration::from_secs(150),
        || async {
            let q = r#"min(time() - process_start_time_seconds{tier="app"}) > 60 and count(up{tier="app"} == 1) == 3"#;
            Ok((!prom_query(&client, q).await?.is_empty()).then_some(()))
        },
    )
    .await?;
    let mut checker = Checker {
        client: client.clone(),
        results: HashMap::new(),
        failures: Vec::new(),
        notes: Vec::new(),
    };
    for d in load_dashboards()? {
        let undefined = undefined_variables(&d);
        ensure!(
            undefined.is_empty(),
            "variables used but not defined: {undefined:#?}"
        );
        let choices = resolve(&client, &d).await?;
        for p in d.panels.iter().filter(|p| !p.exprs.is_empty()) {
            let due = if p.compose_only {
                Due::Nothing
            } else {
                Due::Data
            };
            let place = format!("{} / {}", d.title, p.title);
            checker.check(&place, &p.exprs, &choices, due).await?;
        }
        for (name, expr) in &d.annotations {
            let place = format!("{} / annotation {name}", d.title);
            checker
                .check(&place, std::slice::from_ref(expr), &choices, Due::Series)
                .await?;
        }
    }
    if !checker.notes.is_empty() {
        eprintln!("shown nothing with these values: {:#?}", checker.notes);
    }
    let (failures, ran) = (&checker.failures, checker.results.len());
    ensure!(
        failures.is_empty(),
        "{} failures in {ran} distinct queries: {failures:#?}",
        failures.len()
    );
    eprintln!("{ran} distinct dashboard queries ran");
    Ok(())
}

#[test]
fn references_are_found_in_text_that_is_not_ascii() {
    let found: Vec<String> = references("event → row $symbol [[stream]] ${le:raw} é")
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(found, ["symbol", "stream", "le"]);
}
