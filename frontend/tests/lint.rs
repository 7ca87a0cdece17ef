//! Every build check: a Dockerfile that triggers it (with the message BuildKit prints) and one
//! that does not. Plus `# check=skip=` and `# check=error=true`.

use rbuild_frontend::image::Image;
use rbuild_frontend::source::SourceFile;
use rbuild_frontend::{BuildOptions, ImageResolver, Platform, ResolvedImage, lint, lower, parser};
use rbuild_solver::Digest;

struct Base;

impl ImageResolver for Base {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        // "armonly" has a linux/arm64 image and no index: every platform gets that one.
        let mut image = Image {
            architecture: match reference.starts_with("armonly") {
                true => "arm64".into(),
                false => platform.architecture.clone(),
            },
            os: platform.os.clone(),
            ..Image::default()
        };
        image.config.env = Some(vec!["PATH=/bin".into(), "BASE_VAR=1".into()]);
        Ok(ResolvedImage {
            reference: reference.into(),
            digest: Digest::of(reference.as_bytes()),
            image,
        })
    }
}

/// (rule, message) of every finding.
fn findings(text: &str, dockerignore: &[&str]) -> (Vec<(String, String)>, bool) {
    let file = SourceFile::new("Dockerfile", text.as_bytes());
    let parsed = parser::parse(&file);
    assert!(!parsed.has_errors(), "{text}: {:?}", parsed.diagnostics);
    let options = BuildOptions {
        dockerignore: dockerignore.iter().map(|s| s.to_string()).collect(),
        all_stages: true,
        ..BuildOptions::default()
    };
    let build =
        lower(&parsed.dockerfile, &options, &Base).unwrap_or_else(|d| panic!("{}", d.render()));
    let list = build
        .warnings
        .iter()
        .filter_map(|d| d.rule.map(|r| (r.name.to_string(), d.message.clone())))
        .collect();
    (list, build.failing_checks)
}

fn only(text: &str, ignore: &[&str], rule: &str) -> Vec<String> {
    findings(text, ignore)
        .0
        .into_iter()
        .filter(|(r, _)| r == rule)
        .map(|(_, m)| m)
        .collect()
}

/// Why it is one piece: A table: a triggering and a clean Dockerfile per rule.
#[allow(clippy::too_many_lines)]
#[test]
fn every_rule_has_a_triggering_and_a_clean_case() {
    let cases: &[(&str, &str, &str, &[&str], &str)] = &[
        (
            "StageNameCasing",
            "FROM base AS Builder\n",
            "FROM base AS builder\n",
            &[],
            "Stage name 'Builder' should be lowercase",
        ),
        (
            "FromAsCasing",
            "FROM base as build\n",
            "FROM base AS build\n",
            &[],
            "'as' and 'FROM' keywords' casing do not match",
        ),
        (
            "DuplicateStageName",
            "FROM base AS a\nFROM base AS A\n",
            "FROM base AS a\nFROM base AS b\n",
            &[],
            "Duplicate stage name \"a\", stage names should be unique",
        ),
        (
            "ReservedStageName",
            "FROM base AS scratch\n",
            "FROM base AS other\n",
            &[],
            "Stage name should not use the same name as reserved stage \"scratch\"",
        ),
        (
            "JSONArgsRecommended",
            "FROM base\nCMD run me\n",
            "FROM base\nCMD [\"run\", \"me\"]\n",
            &[],
            "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
        ),
        (
            "MaintainerDeprecated",
            "FROM base\nMAINTAINER me\n",
            "FROM base\nLABEL org.opencontainers.image.authors=me\n",
            &[],
            "Maintainer instruction is deprecated in favor of using label",
        ),
        (
            "UndefinedVar",
            "FROM base\nARG NAME\nENV X=$NAEM\n",
            "FROM base\nARG NAME\nENV X=$NAME Y=$BASE_VAR Z=${UNSET:-d}\n",
            &[],
            "Usage of undefined variable '$NAEM' (did you mean $NAME?)",
        ),
        (
            "UndefinedArgInFrom",
            "FROM base:$VERSON\n",
            "ARG VERSION=1\nFROM base:$VERSION\n",
            &[],
            "FROM argument 'VERSON' is not declared",
        ),
        (
            "InvalidDefaultArgInFrom",
            "ARG TAG\nFROM base:${TAG}\n",
            "ARG TAG=1\nFROM base:${TAG}\n",
            &[],
            "Default value for ARG base:${TAG} results in empty or invalid base image name",
        ),
        (
            "WorkdirRelativePath",
            "FROM base\nWORKDIR app\n",
            "FROM base\nWORKDIR /app\nWORKDIR sub\n",
            &[],
            "Relative workdir \"app\" can have unexpected results if the base image changes",
        ),
        (
            "ConsistentInstructionCasing",
            "FROM base\nRUN a\nrun b\n",
            "from base\nrun a\nrun b\n",
            &[],
            "Command 'run' should match the case of the command majority (uppercase)",
        ),
        (
            "LegacyKeyValueFormat",
            "FROM base\nENV A b\n",
            "FROM base\nENV A=b\n",
            &[],
            "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
        ),
        (
            "MultipleInstructionsDisallowed",
            "FROM base\nCMD [\"a\"]\nCMD [\"b\"]\n",
            "FROM base\nCMD [\"a\"]\nFROM base\nCMD [\"b\"]\n",
            &[],
            "Multiple CMD instructions should not be used in the same stage because only the last one will be used",
        ),
        (
            "SecretsUsedInArgOrEnv",
            "FROM base\nARG API_TOKEN\n",
            "FROM base\nARG PUBLIC_KEY\nARG TOKENIZER\n",
            &[],
            "Do not use ARG or ENV instructions for sensitive data (ARG \"API_TOKEN\")",
        ),
        (
            "ExposeProtoCasing",
            "FROM base\nEXPOSE 80/TcP\n",
            "FROM base\nEXPOSE 80/tcp\n",
            &[],
            "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase",
        ),
        (
            "ExposeInvalidFormat",
            "FROM base\nEXPOSE 127.0.0.1:80:80\n",
            "FROM base\nEXPOSE 80\n",
            &[],
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'",
        ),
        (
            "CopyIgnoredFile",
            "FROM base\nCOPY secret.txt /\n",
            "FROM base\nCOPY public.txt /\n",
            &["secret.txt"],
            "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore",
        ),
        (
            "FromPlatformFlagConstDisallowed",
            "FROM --platform=linux/amd64 base\n",
            "FROM --platform=$BUILDPLATFORM base\n",
            &[],
            "FROM --platform flag should not use constant value \"linux/amd64\"",
        ),
        (
            "InvalidBaseImagePlatform",
            "FROM armonly\n",
            "FROM --platform=linux/arm64 armonly AS a\n",
            &[],
            "Base image armonly was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build",
        ),
        (
            "RedundantTargetPlatform",
            "FROM --platform=$TARGETPLATFORM base\n",
            "FROM base\n",
            &[],
            "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        ),
        (
            "NoEmptyContinuation",
            "FROM base\nRUN a \\\n\n  b\n",
            "FROM base\nRUN a \\\n  b\n",
            &[],
            "Empty continuation line",
        ),
    ];
    let mut covered: Vec<&str> = Vec::new();
    for (rule, bad, good, ignore, message) in cases {
        assert_eq!(
            only(bad, ignore, rule),
            [message.to_string()],
            "{rule} on:\n{bad}"
        );
        assert!(
            only(good, ignore, rule).is_empty(),
            "{rule} should not fire on:\n{good}"
        );
        covered.push(rule);
    }
    for rule in lint::ALL {
        assert!(covered.contains(&rule.name), "no test for {}", rule.name);
    }
}

#[test]
fn check_directive_skips_and_fails() {
    let text = "# check=skip=StageNameCasing,MaintainerDeprecated\nFROM base AS Builder\nMAINTAINER me\nENV A b\n";
    let (list, failing) = findings(text, &[]);
    let rules: Vec<&str> = list.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rules, ["LegacyKeyValueFormat"]);
    assert!(!failing);
    let (list, _) = findings("# check=skip=all\nFROM base AS Builder\n", &[]);
    assert!(list.is_empty());
    let (_, failing) = findings("# check=error=true\nFROM base AS Builder\n", &[]);
    assert!(failing);
    let (_, failing) = findings("# check=error=true\nFROM base AS builder\n", &[]);
    assert!(!failing);
}

#[test]
fn findings_render_with_rule_and_location() {
    let file = SourceFile::new("Dockerfile", b"FROM base AS Builder\n");
    let parsed = parser::parse(&file);
    let build = lower(&parsed.dockerfile, &BuildOptions::default(), &Base).unwrap();
    let text = build.warnings[0].render();
    assert!(
        text.starts_with(
            "Dockerfile:1:14: warning: Stage name 'Builder' should be lowercase [StageNameCasing]"
        ),
        "{text}"
    );
    assert!(
        text.contains("https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"),
        "{text}"
    );
}
