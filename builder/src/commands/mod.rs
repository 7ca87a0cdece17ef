//! One module per subcommand.

pub mod build;
pub mod graph;
pub mod images;
pub mod lint;
pub mod push;
pub mod run;
