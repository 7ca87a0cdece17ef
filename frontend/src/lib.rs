//! The rbuild Dockerfile frontend: parsing, semantics, diagnostics and lowering to a
//! [`rbuild_solver::Graph`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ast;
pub mod convert;
pub mod diagnostic;
pub mod dockerignore;
pub mod git;
pub mod image;
pub mod instructions;
pub mod lint;
pub mod mounts;
pub mod outline;
pub mod parser;
pub mod platform;
pub mod shell;
pub mod source;

pub use convert::{Build, BuildOptions, ImageResolver, ResolvedImage, StageOutput, lower};
pub use diagnostic::{Diagnostic, Severity};
pub use platform::Platform;
pub use source::{SourceFile, Span};
