//! The build graph: a DAG of [`Op`]s whose edges are the inputs of each op.
//!
//! Vertices are deduplicated when they are added: adding an op with the same definition and the
//! same inputs as an existing vertex returns the existing vertex, so two stages that share a
//! prefix share its vertices and the solver runs them once. Equality is structural (op and input
//! vertices), found through a fast in-memory hash; cache keys, which must be stable across
//! processes, are computed by the solver (`crate::cachekey`).

use crate::ops::Op;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use std::hash::{Hash, Hasher};

/// Identifies a vertex of one [`Graph`].
pub type VertexId = NodeIndex<u32>;

/// One step of the build.
#[derive(Clone, Debug)]
pub struct Vertex {
    /// What the step does.
    pub op: Op,
    /// The vertices whose outputs this op reads, in the order the op refers to them.
    pub inputs: Vec<VertexId>,
    /// The name shown in progress output (`[stage 2/5] RUN make`); `None` hides the vertex.
    /// Not part of the cache key, nor are `stage` and `label`.
    pub name: Option<String>,
    /// The stage the step belongs to, as the Dockerfile names it (`stage-1` for an unnamed
    /// stage of several); `None` for sources and the steps of a single unnamed stage.
    pub stage: Option<String>,
    /// The instruction, as the step's name shows it (`RUN make`).
    pub label: Option<String>,
    /// Where in the build definition (byte offsets into the Dockerfile) the instruction that
    /// made this vertex is, for error messages; the first instruction to make it wins.
    pub location: Option<(usize, usize)>,
}

/// How a step is named: its progress name, its stage and its instruction (see [`Vertex`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The progress name.
    pub name: String,
    /// The stage, if it has a name.
    pub stage: Option<String>,
    /// The instruction.
    pub label: String,
}

/// A DAG of build steps.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    dag: DiGraph<Vertex, usize>,
    /// Vertices by the hash of their op and inputs: the first vertex with a hash here, any
    /// other (different vertices with the same hash, found by comparing) in `more_by_hash`.
    by_hash: rustc_hash::FxHashMap<u64, VertexId>,
    more_by_hash: rustc_hash::FxHashMap<u64, Vec<VertexId>>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// An empty graph with room for `vertices` vertices.
    pub fn with_capacity(vertices: usize) -> Graph {
        Graph {
            dag: DiGraph::with_capacity(vertices, vertices),
            ..Graph::default()
        }
    }

    /// Adds a vertex, or returns the existing vertex with the same op and inputs. The first name
    /// given to a vertex is kept.
    pub fn add(&mut self, op: Op, inputs: Vec<VertexId>, name: Option<String>) -> VertexId {
        let step = name.map(|name| Step {
            name,
            ..Step::default()
        });
        self.add_vertex(op, inputs, step)
    }

    /// Adds a step of a stage (as [`Graph::add`]; the first step naming a vertex names it).
    pub fn add_step(&mut self, op: Op, inputs: Vec<VertexId>, step: Step) -> VertexId {
        self.add_vertex(op, inputs, Some(step))
    }

    fn add_vertex(&mut self, op: Op, inputs: Vec<VertexId>, step: Option<Step>) -> VertexId {
        let hash = {
            let mut hasher = rustc_hash::FxHasher::default();
            op.hash(&mut hasher);
            inputs.hash(&mut hasher);
            hasher.finish()
        };
        let same = |id: &VertexId| self.dag[*id].op == op && self.dag[*id].inputs == inputs;
        let first = self.by_hash.get(&hash).copied();
        let existing = first.filter(same).or_else(|| {
            self.more_by_hash
                .get(&hash)
                .and_then(|more| more.iter().copied().find(same))
        });
        if let Some(id) = existing {
            if let Some(step) = step {
                self.name_if_unnamed(id, step);
            }
            return id;
        }
        let count = inputs.len();
        let id = self.dag.add_node(Vertex {
            op,
            inputs,
            name: None,
            stage: None,
            label: None,
            location: None,
        });
        if let Some(step) = step {
            self.name_if_unnamed(id, step);
        }
        for index in 0..count {
            let input = self.dag[id].inputs[index];
            self.dag.add_edge(input, id, index);
        }
        if first.is_none() {
            self.by_hash.insert(hash, id);
        } else {
            self.more_by_hash.entry(hash).or_default().push(id);
        }
        id
    }

    /// Adds every vertex of `other` (merging those equal to vertices here); returns, for each
    /// vertex of `other` by index, its id in this graph.
    pub fn absorb(&mut self, other: &Graph) -> Vec<VertexId> {
        let mut map: Vec<VertexId> = Vec::with_capacity(other.len());
        // Index order is a topological order: inputs are mapped before their readers.
        for id in other.dag.node_indices() {
            let v = &other.dag[id];
            let inputs = v.inputs.iter().map(|i| map[i.index()]).collect();
            let step = v.name.clone().map(|name| Step {
                name,
                stage: v.stage.clone(),
                label: v.label.clone().unwrap_or_default(),
            });
            let id = self.add_vertex(v.op.clone(), inputs, step);
            if let Some((start, end)) = v.location {
                self.locate(id, start, end);
            }
            map.push(id);
        }
        map
    }

    /// Names `id` as `step` says unless it has a name (as [`Graph::add`] does for a vertex
    /// added twice).
    pub fn name_if_unnamed(&mut self, id: VertexId, step: Step) {
        let vertex = &mut self.dag[id];
        if vertex.name.is_none() {
            vertex.name = Some(step.name);
            vertex.stage = step.stage;
            vertex.label = (!step.label.is_empty()).then_some(step.label);
        }
    }

    /// Records where the instruction that made `id` is (`start..end`, byte offsets), unless
    /// an earlier instruction made it.
    pub fn locate(&mut self, id: VertexId, start: usize, end: usize) {
        self.dag[id].location.get_or_insert((start, end));
    }

    /// The vertex with this id.
    ///
    /// # Panics
    /// If `id` is not a vertex of this graph.
    pub fn vertex(&self, id: VertexId) -> &Vertex {
        &self.dag[id]
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.dag.node_count()
    }

    /// Whether the graph has no vertices.
    pub fn is_empty(&self) -> bool {
        self.dag.node_count() == 0
    }

    /// The targets and every vertex they depend on, inputs before the vertices that read them.
    pub fn needed_for(&self, targets: &[VertexId]) -> Vec<VertexId> {
        let reversed = Reversed(&self.dag);
        let mut needed = vec![false; self.dag.node_count()];
        for &target in targets {
            let mut dfs = Dfs::new(reversed, target);
            while let Some(v) = dfs.next(reversed) {
                needed[v.index()] = true;
            }
        }
        // Vertices are only ever added after their inputs, so index order is a topological order.
        self.dag
            .node_indices()
            .filter(|v| needed[v.index()])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{ExecOp, NetworkMode};

    fn exec(cmd: &str) -> Op {
        Op::Exec(ExecOp {
            args: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Host,
            inline_files: vec![],
            mounts: vec![],
            platform: None,
            limits: Default::default(),
            insecure: false,
        })
    }

    #[test]
    fn equal_vertices_are_merged_and_order_is_topological() {
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let a = g.add(exec("a"), vec![base], Some("[a 1/2] RUN a".into()));
        let a_again = g.add(exec("a"), vec![base], Some("[b 1/2] RUN a".into()));
        assert_eq!(a, a_again);
        assert_eq!(g.vertex(a).name.as_deref(), Some("[a 1/2] RUN a"));
        let b = g.add(exec("b"), vec![a], None);
        let unrelated = g.add(exec("c"), vec![base], None);
        assert_eq!(g.len(), 4);
        let needed = g.needed_for(&[b]);
        assert_eq!(needed, vec![base, a, b]);
        assert!(!needed.contains(&unrelated));
    }

    #[test]
    fn different_inputs_give_different_vertices() {
        let mut g = Graph::new();
        let base = g.add(Op::Scratch, vec![], None);
        let x = g.add(exec("x"), vec![base], None);
        let y1 = g.add(exec("y"), vec![base], None);
        let y2 = g.add(exec("y"), vec![x], None);
        assert_ne!(y1, y2);
    }

    #[test]
    fn absorbing_a_graph_merges_equal_vertices() {
        let mut a = Graph::new();
        let base = a.add(Op::Scratch, vec![], None);
        let shared = a.add(
            exec("shared"),
            vec![base],
            Some("[a 1/2] RUN shared".into()),
        );
        a.add(exec("only-a"), vec![shared], None);
        let mut b = Graph::new();
        let b_base = b.add(Op::Scratch, vec![], None);
        let b_shared = b.add(
            exec("shared"),
            vec![b_base],
            Some("[b 1/2] RUN shared".into()),
        );
        let b_own = b.add(exec("only-b"), vec![b_shared], None);
        let map = a.absorb(&b);
        assert_eq!(map[b_shared.index()], shared);
        assert_eq!(a.len(), 4, "scratch, shared, only-a, only-b");
        let own = a.vertex(map[b_own.index()]);
        assert_eq!(own.inputs, vec![shared]);
        assert_eq!(a.vertex(shared).name.as_deref(), Some("[a 1/2] RUN shared"));
    }
}
