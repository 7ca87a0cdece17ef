//! One module per subcommand.

pub mod build;
pub mod check;
pub mod du;
pub mod graph;
pub mod history;
pub mod images;
pub mod inspect;
pub mod lint;
pub mod load;
pub mod login;
pub mod prune;
pub mod pull;
pub mod push;
pub mod rmi;
pub mod run;
pub mod save;
pub mod tag;
