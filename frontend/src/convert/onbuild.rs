//! ONBUILD: recording a trigger in the image config, and running a base image's triggers as
//! the first instructions of a stage built on it.

use super::{Lowerer, StageState};
use crate::ast::Instruction;
use crate::diagnostic::Diagnostic;
use crate::instructions::{Command, parse_command};
use crate::source::SourceFile;

impl Lowerer<'_> {
    /// ONBUILD: the trigger is kept in the image config for the stages built on it.
    pub(super) fn lower_onbuild(
        &mut self,
        state: &mut StageState,
        _ins: &Instruction,
        text: &str,
    ) -> Result<(), Diagnostic> {
        // BuildKit records no history entry for ONBUILD.
        state
            .image
            .config
            .on_build
            .get_or_insert_with(Vec::new)
            .push(text.to_string());
        Ok(())
    }

    /// Parses the ONBUILD triggers of a base image. Errors point at the FROM line, and so do
    /// the instructions (their text stays the trigger's, for progress and history).
    pub(super) fn onbuild_commands(
        &self,
        triggers: &[String],
        base: &str,
        from: &Instruction,
    ) -> Result<Vec<(Instruction, Command)>, Diagnostic> {
        let mut out = Vec::new();
        for trigger in triggers {
            let fail = |message: String| {
                self.error(
                    from.args_span,
                    format!("ONBUILD trigger {trigger:?} of {base}: {message}"),
                )
            };
            let file = SourceFile::new(format!("ONBUILD of {base}"), trigger.as_bytes());
            let parsed = crate::parser::parse(&file);
            if let Some(d) = parsed
                .diagnostics
                .iter()
                .find(|d| d.severity == crate::diagnostic::Severity::Error)
            {
                return Err(fail(d.message.clone()));
            }
            for mut ins in parsed.dockerfile.instructions {
                if ["onbuild", "from", "maintainer"]
                    .iter()
                    .any(|k| ins.keyword.eq_ignore_ascii_case(k))
                {
                    return Err(fail(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        ins.keyword.to_ascii_uppercase()
                    )));
                }
                let command = parse_command(&file, &ins).map_err(|d| fail(d.message))?;
                ins.keyword_span = from.keyword_span;
                ins.args_span = from.args_span;
                ins.span = from.span;
                for flag in &mut ins.flags {
                    flag.span = from.args_span;
                }
                out.push((ins, command));
            }
        }
        Ok(out)
    }
}
