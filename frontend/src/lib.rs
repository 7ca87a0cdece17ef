//! The rbuild Dockerfile frontend: parsing, semantics, diagnostics and lowering to a
//! [`rbuild_solver::Graph`].
#![deny(missing_docs)]

pub mod ast;
pub mod diagnostic;
pub mod parser;
pub mod source;

pub use diagnostic::{Diagnostic, Severity};
pub use source::{SourceFile, Span};
