//! One module per subcommand.

pub mod build;
pub mod check;
pub mod du;
pub mod graph;
pub mod images;
pub mod lint;
pub mod prune;
pub mod push;
pub mod run;
