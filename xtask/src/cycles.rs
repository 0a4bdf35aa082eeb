//! The import-cycle check of `cargo xtask test`: no cycle between the
//! top-level modules of `src/`.
//!
//! `cargo-modules` (pinned in `.ci/run`) reads the crate the way
//! rust-analyzer does and prints its dependency graph as DOT: one node per
//! item (`portico::cache::layer::respond`), `owns` edges for nesting and
//! `uses` edges for every item one item uses. Its own `--acyclic` flag
//! refuses any cycle at all, including the harmless ones inside one module
//! (`graphql::error` and `graphql::limits` name each other), so the graph
//! is folded here instead: every node becomes its top-level module
//! (`cache`), every `uses` edge between two different top-level modules
//! an edge of the folded graph, and a strongly connected component of more
//! than one module is a cycle. The crate root (`lib.rs`, which re-exports)
//! is not a module of its own and is left out.
//!
//! cargo-modules 0.27 sees `use` declarations and the types in signatures
//! and fields, but not constants, paths inside function bodies or macro
//! arguments (`crate::error::ErrorChain(&error)` in a `tracing::warn!`), and
//! it names an `impl` block's methods after the type, wherever the block is
//! written (`impl FromRef<AppState> for Telemetry` in `app.rs` would read
//! as `telemetry` using `app`). So methods' edges are left out, and every
//! `crate::<module>` path written in a file of `src/` (outside comments and
//! the `#[cfg(test)] mod tests` at its end) is added as an edge of that
//! file's top-level module: what a reader of the file sees it use.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use crate::workspace::Workspace;

/// The `cargo-modules` release `.ci/run` installs: 0.28 needs a newer rustc
/// than the toolchain here.
pub const CARGO_MODULES_VERSION: &str = "0.27.0";

/// The crate whose library is checked.
const CRATE: &str = "portico";

/// Runs `cargo modules dependencies` on the library and fails, naming the
/// modules of each cycle and the items behind each of its edges, when the
/// top-level modules of `src/` import one another in a circle.
pub fn check(workspace: &Workspace) -> Result<()> {
    let output = workspace
        .cargo()
        .args(["modules", "dependencies", "--package", CRATE, "--lib", "--no-externs", "--no-sysroot"])
        .args(["--layout", "dot"])
        .output()
        .with_context(|| {
            format!("could not start `cargo modules`: install it with `cargo install --locked cargo-modules@{CARGO_MODULES_VERSION}` (as .ci/run does)")
        })?;
    if !output.status.success() {
        bail!("cargo modules dependencies failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let dot = String::from_utf8(output.stdout).context("cargo modules printed something that is not UTF-8")?;
    let mut graph = ModuleGraph::from_dot(&dot, CRATE);
    graph.add_sources(&workspace.root().join("src"))?;
    if graph.edges.is_empty() {
        bail!("cargo modules printed no `uses` edge between top-level modules; its output format may have changed");
    }
    let cycles = graph.cycles();
    if cycles.is_empty() {
        println!("no import cycle between the {} top-level modules of src/", graph.modules().len());
        return Ok(());
    }
    eprintln!("{}", graph.report(&cycles));
    bail!("{} import cycle(s) between top-level modules of src/ (listed above)", cycles.len())
}

/// `uses` edges folded to the crate's top-level modules, each with the
/// item-level edges that make it.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// `(from, to)` → item pairs (`cache::layer::respond` → `error::GatewayError`).
    pub edges: BTreeMap<(String, String), BTreeSet<(String, String)>>,
}

impl ModuleGraph {
    /// Folds the DOT graph `cargo modules dependencies` prints for `krate`.
    pub fn from_dot(dot: &str, krate: &str) -> Self {
        let mut graph = Self::default();
        for line in dot.lines() {
            let Some((from, to)) = uses_edge(line) else { continue };
            let (Some(from), Some(to)) = (item_path(from, krate), item_path(to, krate)) else { continue };
            if is_method(&from) {
                continue;
            }
            let (from_module, to_module) = (top_level(&from), top_level(&to));
            if from_module != to_module {
                graph.edges.entry((from_module.to_owned(), to_module.to_owned())).or_default().insert((from, to));
            }
        }
        graph
    }

    /// Adds the `crate::<module>` paths written in each file under `src`.
    pub fn add_sources(&mut self, src: &std::path::Path) -> Result<()> {
        let mut files = vec![src.to_path_buf()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))? {
                    files.push(entry?.path());
                }
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            self.add_source(&relative, &text);
        }
        Ok(())
    }

    /// Adds the `crate::<module>` paths of one file (`relative` to `src/`).
    pub fn add_source(&mut self, relative: &str, text: &str) {
        let module = relative.split('/').next().unwrap_or(relative).trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            return;
        }
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
        for (number, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let preceded_by_ident =
                    line[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if preceded_by_ident {
                    continue;
                }
                let rest = &line[at + "crate::".len()..];
                let target: String =
                    rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
                if target.is_empty() || target == module {
                    continue;
                }
                let written: String =
                    rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                self.edges
                    .entry((module.to_owned(), target))
                    .or_default()
                    .insert((format!("src/{relative}:{}", number + 1), written.trim_end_matches(':').to_owned()));
            }
        }
    }

    /// Every module that has an edge.
    pub fn modules(&self) -> BTreeSet<&str> {
        self.edges.keys().flat_map(|(from, to)| [from.as_str(), to.as_str()]).collect()
    }

    /// The strongly connected components of more than one module, each
    /// sorted, in a stable order.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let modules: Vec<&str> = self.modules().into_iter().collect();
        let index: BTreeMap<&str, usize> = modules.iter().enumerate().map(|(at, name)| (*name, at)).collect();
        let mut successors = vec![Vec::new(); modules.len()];
        for (from, to) in self.edges.keys() {
            successors[index[from.as_str()]].push(index[to.as_str()]);
        }
        let mut components: Vec<Vec<String>> = strongly_connected(&successors)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let mut names: Vec<String> = component.iter().map(|&at| modules[at].to_owned()).collect();
                names.sort();
                names
            })
            .collect();
        components.sort();
        components
    }

    /// For each cycle: its modules, one closed path through them, and every
    /// module edge inside it with up to three of the item edges behind it.
    pub fn report(&self, cycles: &[Vec<String>]) -> String {
        let mut text = String::new();
        for cycle in cycles {
            let members: BTreeSet<&str> = cycle.iter().map(String::as_str).collect();
            text.push_str(&format!("import cycle between top-level modules: {}\n", cycle.join(", ")));
            if let Some(path) = self.closed_path(&members) {
                text.push_str(&format!("  for example: {}\n", path.join(" -> ")));
            }
            text.push_str("  edges inside it (module -> module, then item -> item or file:line -> path written):\n");
            for ((from, to), items) in &self.edges {
                if !members.contains(from.as_str()) || !members.contains(to.as_str()) {
                    continue;
                }
                text.push_str(&format!("    {from} -> {to}\n"));
                for (item_from, item_to) in items.iter().take(3) {
                    text.push_str(&format!("        {item_from} -> {item_to}\n"));
                }
                if items.len() > 3 {
                    text.push_str(&format!("        ... and {} more\n", items.len() - 3));
                }
            }
        }
        text
    }

    /// A shortest cycle through the component's first module, by breadth-
    /// first search within the component.
    fn closed_path(&self, members: &BTreeSet<&str>) -> Option<Vec<String>> {
        let start = *members.iter().next()?;
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for (from, to) in self.edges.keys() {
                if from != at || !members.contains(to.as_str()) {
                    continue;
                }
                if to == start {
                    let mut path = Vec::new();
                    let mut step = at;
                    while step != start {
                        path.push(step.to_owned());
                        step = came_from[step];
                    }
                    path.push(start.to_owned());
                    path.reverse();
                    path.push(start.to_owned());
                    return Some(path);
                }
                if !came_from.contains_key(to.as_str()) && to != start {
                    came_from.insert(to, at);
                    queue.push_back(to);
                }
            }
        }
        None
    }
}

/// The two node names of a DOT line of a `uses` edge.
fn uses_edge(line: &str) -> Option<(&str, &str)> {
    let (nodes, attributes) = line.trim().split_once(" [")?;
    if !attributes.contains("label=\"uses\"") {
        return None;
    }
    let (from, to) = nodes.split_once(" -> ")?;
    Some((from.trim().strip_prefix('"')?.strip_suffix('"')?, to.trim().strip_prefix('"')?.strip_suffix('"')?))
}

/// The path inside the crate (`cache::layer::respond`), or `None` for the
/// crate root and other crates.
fn item_path(node: &str, krate: &str) -> Option<String> {
    let inside = node.strip_prefix(krate)?.strip_prefix("::")?;
    Some(inside.to_owned())
}

/// Whether the node is a method, named after its type (`a::Type::method`):
/// its `impl` block may live in another module.
fn is_method(path: &str) -> bool {
    let segments: Vec<&str> = path.split("::").collect();
    segments.len() >= 2
        && segments[..segments.len() - 1].iter().any(|segment| segment.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// The first segment of a path inside the crate: its top-level module
/// (`lib.rs` defines no items of its own, only modules and re-exports).
fn top_level(path: &str) -> &str {
    path.split_once("::").map_or(path, |(module, _)| module)
}

/// Tarjan's algorithm, iteratively: the components of the graph given by
/// each node's successors.
fn strongly_connected(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let count = successors.len();
    let mut index = vec![usize::MAX; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut next = 0;
    for root in 0..count {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its successor list)
        let mut work = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (node, ref mut position)) = work.last_mut() {
            if let Some(&successor) = successors[node].get(*position) {
                *position += 1;
                if index[successor] == usize::MAX {
                    index[successor] = next;
                    low[successor] = next;
                    next += 1;
                    stack.push(successor);
                    on_stack[successor] = true;
                    work.push((successor, 0));
                } else if on_stack[successor] {
                    low[node] = low[node].min(index[successor]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: &str, to: &str, label: &str) -> String {
        format!(
            "    \"{from}\" -> \"{to}\" [label=\"{label}\", color=\"#7f7f7f\", style=\"dashed\"] [constraint=false]; // \"{label}\" edge\n"
        )
    }

    #[test]
    fn uses_edges_fold_to_top_level_modules_and_a_circle_is_reported_with_its_items() {
        let dot = [
            "digraph {\n".to_owned(),
            "    \"portico::config\" [label=\"pub mod|config\"]; // \"mod\" node\n".to_owned(),
            edge("portico", "portico::config", "owns"),
            edge("portico::config::Config", "portico::auth::config::AuthConfig", "uses"),
            edge("portico::auth::config::AuthConfig", "portico::config::Problems", "uses"),
            // Inside one module: no edge of the folded graph.
            edge("portico::graphql::error", "portico::graphql::limits::LimitError", "uses"),
            edge("portico::graphql::limits", "portico::graphql::error::GraphqlCode", "uses"),
            // Out of the crate or from its root: ignored.
            edge("portico::auth::jwt", "http::Uri", "uses"),
            edge("portico", "portico::server::serve", "uses"),
            // A one-way edge: not a cycle.
            edge("portico::graphql::http", "portico::identity::Identity", "uses"),
            "}\n".to_owned(),
        ]
        .concat();
        let graph = ModuleGraph::from_dot(&dot, "portico");
        let folded: Vec<(&str, &str)> = graph.edges.keys().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(folded, [("auth", "config"), ("config", "auth"), ("graphql", "identity")]);
        let cycles = graph.cycles();
        assert_eq!(cycles, [vec!["auth".to_owned(), "config".to_owned()]]);
        let report = graph.report(&cycles);
        assert!(report.contains("import cycle between top-level modules: auth, config"), "{report}");
        assert!(report.contains("for example: auth -> config -> auth"), "{report}");
        assert!(report.contains("auth::config::AuthConfig -> config::Problems"), "{report}");
        assert!(!report.contains("identity"), "{report}");
    }

    #[test]
    fn a_longer_circle_is_one_component_with_a_closed_path() {
        let dot = [
            edge("portico::server::x", "portico::app::y", "uses"),
            edge("portico::app::y", "portico::error::z", "uses"),
            edge("portico::error::z", "portico::server::x", "uses"),
            edge("portico::proxy::p", "portico::error::z", "uses"),
        ]
        .concat();
        let graph = ModuleGraph::from_dot(&dot, "portico");
        let cycles = graph.cycles();
        assert_eq!(cycles, [vec!["app".to_owned(), "error".to_owned(), "server".to_owned()]]);
        assert!(
            graph.report(&cycles).contains("for example: app -> error -> server -> app"),
            "{}",
            graph.report(&cycles)
        );
    }

    #[test]
    fn methods_are_left_to_the_source_scan_which_sees_paths_in_bodies_and_macros() {
        // As cargo-modules names `impl FromRef<AppState> for Telemetry` written in app.rs.
        let dot = edge("portico::telemetry::Telemetry::from_ref", "portico::app::AppState", "uses");
        let mut graph = ModuleGraph::from_dot(&dot, "portico");
        assert!(graph.edges.is_empty(), "{:?}", graph.edges);

        let file = "//! Uses crate::app in a comment only.\n\
            use super::Thing;\n\
            fn f() { tracing::warn!(error = %crate::error::ErrorChain(&e), \"x\"); }\n\
            const H: u8 = my_crate::app::X; // not this crate\n\
            fn g() -> crate::upstream::Upstreams { todo!() }\n\
            fn h() { crate::upstream::go() }\n\
            #[cfg(test)]\nmod tests {\n    use crate::config::Config;\n}\n";
        graph.add_source("upstream/mod.rs", file);
        graph.add_source("error.rs", "use crate::upstream::UpstreamError;\n");
        graph.add_source("lib.rs", "pub use error::ErrorChain; fn x() { crate::app::app() }\n");
        let folded: Vec<(&str, &str)> = graph.edges.keys().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(folded, [("error", "upstream"), ("upstream", "error")], "itself, comments, tests, lib.rs: no edge");
        let items = &graph.edges[&("upstream".to_owned(), "error".to_owned())];
        assert!(items.contains(&("src/upstream/mod.rs:3".to_owned(), "error::ErrorChain".to_owned())), "{items:?}");
        assert_eq!(graph.cycles(), [vec!["error".to_owned(), "upstream".to_owned()]]);
    }

    #[test]
    fn an_acyclic_graph_has_no_cycle() {
        let dot =
            [edge("portico::a::x", "portico::b::y", "uses"), edge("portico::b::y", "portico::c::z", "uses")].concat();
        assert!(ModuleGraph::from_dot(&dot, "portico").cycles().is_empty());
    }
}
