//! Unit tests of lowering, with a resolver that makes up images.

use super::copy::{normalize_dest, url_filename};
use super::meta::go_duration;
use super::*;
use crate::image::History;
use crate::parser::parse;
use crate::source::SourceFile;
use rbuild_solver::{CacheSharing, ExecOp, FileAction, MountKind, Op};

struct Fixed;

impl ImageResolver for Fixed {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String> {
        if reference.starts_with("missing") || reference == "bulider" {
            return Err(format!("{reference}: not found"));
        }
        let mut image = Image::default();
        // "armonly" has one image, for linux/arm64; others have one per platform.
        let of = match reference.starts_with("armonly") {
            true => Platform::parse("linux/arm64").unwrap(),
            false => platform.clone(),
        };
        image.os = of.os.clone();
        image.architecture = of.architecture.clone();
        image.variant = of.variant();
        image.config.env = Some(vec!["PATH=/bin".into(), "BASE=1".into()]);
        image.config.cmd = Some(vec!["sh".into()]);
        image.history.push(History {
            created_by: Some("base".into()),
            ..History::default()
        });
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{reference}"),
            digest: Digest::of(format!("{reference} {of}").as_bytes()),
            image,
        })
    }
}

fn lower_str(text: &str, options: &BuildOptions) -> Result<Build, String> {
    let file = SourceFile::new("Dockerfile", text.as_bytes());
    let parsed = parse(&file);
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    lower(&parsed.dockerfile, options, &Fixed).map_err(|d| d.render())
}

fn exec_of(build: &Build, v: VertexId) -> ExecOp {
    match &build.graph.vertex(v).op {
        Op::Exec(e) => e.clone(),
        other => panic!("not an exec: {other:?}"),
    }
}

#[test]
fn run_mounts_lower_with_buildkit_defaults() {
    let b = lower_str(
        "FROM base AS build\nRUN make\nFROM base\nARG D=deps\nWORKDIR /src\n\
         RUN --mount=type=cache,target=.cache,uid=$BASE \\\n\
             --mount=from=build,source=/out,target=/in,rw \\\n\
             --mount=source=$D,target=/ctx \\\n\
             --mount=type=tmpfs,target=/t,size=1m \\\n\
             --mount=type=secret,id=npmrc \\\n\
             --mount=type=secret,id=tok,env=TOKEN \\\n\
             --mount=type=ssh \\\n\
             true\n",
        &BuildOptions::default(),
    )
    .unwrap();
    let run = exec_of(&b, b.target);
    let inputs = &b.graph.vertex(b.target).inputs;
    assert_eq!(inputs.len(), 3, "rootfs, the build stage, the context");
    let m = &run.mounts;
    assert_eq!(m.len(), 7);
    assert_eq!(m[0].target, "/src/.cache");
    assert!(!m[0].readonly);
    assert_eq!(
        m[0].kind,
        MountKind::Cache {
            id: "/src/.cache".into(),
            sharing: CacheSharing::Shared,
            input: None,
            source: "/".into(),
            mode: 0o755,
            uid: 1,
            gid: 0
        }
    );
    assert_eq!((m[1].target.as_str(), m[1].readonly), ("/in", false));
    assert_eq!(
        m[1].kind,
        MountKind::Bind {
            input: 1,
            source: "/out".into(),
            exclude: vec![],
        }
    );
    assert!(matches!(b.graph.vertex(inputs[1]).op, Op::Exec(_)));
    assert!(m[2].readonly, "binds are read-only by default");
    assert_eq!(
        m[2].kind,
        MountKind::Bind {
            input: 2,
            source: "/deps".into(),
            exclude: vec![],
        }
    );
    match &b.graph.vertex(inputs[2]).op {
        Op::Local(l) => assert_eq!(l.include, ["deps"]),
        other => panic!("not the context: {other:?}"),
    }
    assert_eq!(
        m[3].kind,
        MountKind::Tmpfs {
            size: Some(1 << 20)
        }
    );
    assert_eq!(m[4].target, "/run/secrets/npmrc");
    assert!(
        matches!(&m[4].kind, MountKind::Secret { id, mode: 0o400, required: false, .. } if id == "npmrc")
    );
    assert_eq!(
        m[5].target, "",
        "an env secret has no file unless a target is given"
    );
    assert!(matches!(&m[5].kind, MountKind::Secret { env: Some(e), .. } if e == "TOKEN"));
    assert_eq!(m[6].target, "/run/buildkit/ssh_agent.0");
    assert!(
        run.env
            .contains(&"SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0".to_string())
    );
    // The mount flags are not in the history, as in BuildKit.
    let last = b.image.history.last().unwrap();
    assert!(!last.created_by.as_deref().unwrap().contains("--mount"));

    let err = |df: &str| lower_str(df, &BuildOptions::default()).unwrap_err();
    assert!(
        err("FROM base\nRUN --mount=type=cache,target=/ true\n").contains("invalid mount target")
    );
    assert!(
        err("FROM base\nRUN --mount=from=$X,target=/a true\n")
            .contains("doesn't support variable expansion")
    );
    assert!(
        err("FROM base\nRUN --mount=type=tmpfs,target=/a,size=big true\n").contains("invalid size")
    );
}

/// BuildKit's `dispatchArg`: an ARG with a value sets the steps' environment over an earlier
/// ENV of the same name (the image config keeps the ENV), a later ENV wins again, words expand
/// with whichever came last, and a stage built on a stage starts with its ARGs and environment,
/// the config's ENV set again on top.
#[test]
fn args_after_env_set_the_steps_environment() {
    let b = lower_str(
        "FROM base AS a\nENV X=env Y=env\nARG X=arg\nARG Y\nRUN echo $X\nENV Z=$X\nARG Y=arg2 Z=zarg\nENV Y=last\nRUN true\nFROM a\nRUN child\n",
        &BuildOptions {
            build_args: [("Z".to_string(), "given".to_string())].into(),
            ..Default::default()
        },
    )
    .unwrap();
    let runs: Vec<ExecOp> = (0..b.graph.len())
        .filter_map(|i| match &b.graph.vertex(VertexId::new(i)).op {
            Op::Exec(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let first = runs
        .iter()
        .find(|e| e.args.last().unwrap() == "echo $X")
        .unwrap();
    // `ARG Y` without a value leaves the ENV's.
    assert_eq!(first.env, ["PATH=/bin", "BASE=1", "Y=env", "X=arg"]);
    let second = runs
        .iter()
        .find(|e| e.args.last().unwrap() == "true")
        .unwrap();
    assert_eq!(
        second.env,
        ["PATH=/bin", "BASE=1", "X=arg", "Z=given", "Y=last"]
    );
    let child = runs
        .iter()
        .find(|e| e.args.last().unwrap() == "child")
        .unwrap();
    // The config (X=env, Y=last, Z=arg's expansion) is set again over the parent's steps'.
    assert_eq!(
        child.env,
        ["PATH=/bin", "BASE=1", "X=env", "Y=last", "Z=arg"]
    );
    assert_eq!(
        b.image.config.env.as_deref().unwrap(),
        ["PATH=/bin", "BASE=1", "X=env", "Y=last", "Z=arg"]
    );
    // The RUN history names each ARG once, where first declared, with the environment's value;
    // the child's RUN names the parent's ARGs too.
    let history: Vec<&str> = b
        .image
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .filter(|c| c.starts_with("RUN") || c.starts_with("ARG"))
        .collect();
    assert_eq!(
        history,
        [
            "ARG X=arg",
            "ARG Y",
            "RUN |2 X=arg Y=env /bin/sh -c echo $X # buildkit",
            "ARG Y=arg2 Z=given",
            "RUN |3 X=arg Y=last Z=given /bin/sh -c true # buildkit",
            "RUN |3 X=env Y=last Z=arg /bin/sh -c child # buildkit",
        ]
    );
}

#[test]
fn env_workdir_user_reach_run_and_config() {
    let b = lower_str(
        "FROM base\nARG V=1\nENV A=$V B=${BASE}x\nWORKDIR app\nUSER 1000\nRUN echo $A\nCMD [\"run\"]\n",
        &BuildOptions::default(),
    )
    .unwrap();
    let run = exec_of(&b, b.target);
    assert_eq!(run.args, ["/bin/sh", "-c", "echo $A"]);
    assert_eq!(run.cwd, "/app");
    assert_eq!(run.user, "1000");
    // In the order last set, as BuildKit's LLB state: the ARG came before the ENV.
    assert_eq!(run.env, ["PATH=/bin", "BASE=1", "V=1", "A=1", "B=1x"]);
    let c = &b.image.config;
    assert_eq!(
        c.env.as_deref().unwrap(),
        ["PATH=/bin", "BASE=1", "A=1", "B=1x"]
    );
    assert_eq!(c.working_dir.as_deref(), Some("/app"));
    assert_eq!(c.cmd.as_deref().unwrap(), ["run"]);
    let created_by: Vec<&str> = b
        .image
        .history
        .iter()
        .map(|h| h.created_by.as_deref().unwrap())
        .collect();
    assert_eq!(
        created_by,
        [
            "base",
            "ARG V=1",
            "ENV A=1 B=1x",
            "WORKDIR /app",
            "USER 1000",
            "RUN |1 V=1 /bin/sh -c echo $A # buildkit",
            "CMD [\"run\"]"
        ]
    );
    assert_eq!(
        b.graph.vertex(b.target).name.as_deref(),
        Some("[3/3] RUN echo 1")
    );
}

#[test]
fn only_stages_the_target_needs_are_lowered() {
    let text = "FROM base AS a\nRUN a\nFROM base AS unused\nRUN unused\nFROM scratch\nCOPY --from=A /x /x\n";
    let b = lower_str(text, &BuildOptions::default()).unwrap();
    let names: Vec<String> = b
        .graph
        .needed_for(&[b.target])
        .into_iter()
        .filter_map(|v| b.graph.vertex(v).name.clone())
        .collect();
    assert!(names.iter().any(|n| n == "[a 2/2] RUN a"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("unused")), "{names:?}");
    assert_eq!(
        b.graph.len(),
        4,
        "image, run a, scratch of the final stage, copy"
    );
    let b = lower_str(
        text,
        &BuildOptions {
            target: Some("UNUSED".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(exec_of(&b, b.target).args[2], "unused");
}

#[test]
fn copy_lowers_to_a_local_source_per_copy() {
    let b = lower_str(
        "FROM scratch\nWORKDIR /w\nCOPY a b ./\nCOPY c .\n",
        &BuildOptions::default(),
    )
    .unwrap();
    let v = b.graph.vertex(b.target);
    let Op::File(f) = &v.op else { panic!() };
    let FileAction::Copy { paths, dest, .. } = &f.actions[0] else {
        panic!()
    };
    assert_eq!(paths, &["c"]);
    assert_eq!(dest, "/w/");
    let Op::Local(local) = &b.graph.vertex(v.inputs[1]).op else {
        panic!()
    };
    assert_eq!(local.include, ["c"]);
}

#[test]
fn copy_parents_and_exclude() {
    let b = lower_str(
        "FROM scratch AS s\nFROM scratch\n\
         COPY --parents --exclude=*.md --exclude=tmp x/./y/*.txt z.txt /d/\n\
         COPY --from=s --exclude=$NOT_EXPANDED /a /b\n",
        &BuildOptions::default(),
    )
    .unwrap();
    let copy_of = |v: &rbuild_solver::graph::Vertex| {
        let Op::File(f) = &v.op else { panic!() };
        f.actions.clone()
    };
    let last = b.graph.vertex(b.target);
    let actions = copy_of(last);
    let FileAction::Copy {
        exclude_patterns, ..
    } = &actions[0]
    else {
        panic!()
    };
    assert_eq!(
        exclude_patterns,
        &["$NOT_EXPANDED"],
        "patterns are not expanded"
    );
    let parents = b.graph.vertex(last.inputs[0]);
    let actions = copy_of(parents);
    assert_eq!(actions.len(), 2, "one copy per source with --parents");
    let mut selected = Vec::new();
    for action in actions {
        let FileAction::Copy {
            source,
            paths,
            include_patterns,
            exclude_patterns,
            ..
        } = action
        else {
            panic!()
        };
        assert_eq!(exclude_patterns, ["*.md", "tmp"]);
        let Op::Local(local) = &b.graph.vertex(parents.inputs[source]).op else {
            panic!()
        };
        assert_eq!(local.include_patterns, include_patterns);
        assert_eq!(local.exclude_patterns, exclude_patterns);
        selected.push((
            paths[0].clone(),
            include_patterns[0].clone(),
            local.include[0].clone(),
        ));
    }
    assert_eq!(
        selected,
        [
            ("x".into(), "y/*.txt".into(), "x".into()),
            ("/".into(), "z.txt".into(), String::new())
        ]
    );
    let history: Vec<_> = b
        .image
        .history
        .iter()
        .map(|h| h.created_by.as_deref())
        .collect();
    assert_eq!(
        history,
        [
            Some("COPY --parents x/./y/*.txt z.txt /d/ # buildkit"),
            Some("COPY /a /b # buildkit")
        ]
    );
}

#[test]
fn add_checksum_unpack_and_keep_git_dir() {
    let unpacks = |text: &str| {
        let b = lower_str(text, &BuildOptions::default()).unwrap();
        let Op::File(f) = &b.graph.vertex(b.target).op else {
            panic!()
        };
        let FileAction::Copy {
            unpack_archives, ..
        } = &f.actions[0]
        else {
            panic!()
        };
        *unpack_archives
    };
    assert!(unpacks("FROM scratch\nADD a.tar /x/\n"));
    assert!(unpacks("FROM scratch\nADD --keep-git-dir=true a.tar /x/\n"));
    assert!(!unpacks("FROM scratch\nADD --unpack=false a.tar /x/\n"));
    let e = lower_str(
        "FROM scratch\nADD --checksum=sha256:0123 a.tar /x/\n",
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("Dockerfile:2:5: error: checksum requires HTTP(S) or Git sources"),
        "{e}"
    );
    let e = lower_str(
        "FROM scratch\nADD --keep-git-dir=maybe a.tar /x/\n",
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(
        e.contains("expecting boolean value for flag keep-git-dir"),
        "{e}"
    );
}

#[test]
fn add_from_urls() {
    assert_eq!(
        url_filename("https://example.com/dl/app-1.2.tar.gz"),
        "app-1.2.tar.gz"
    );
    assert_eq!(
        url_filename("https://example.com/dl/a%20b.txt?x=1#top"),
        "a b.txt"
    );
    assert_eq!(url_filename("https://example.com/dir/"), "dir");
    assert_eq!(url_filename("https://example.com"), "__unnamed__");
    assert_eq!(url_filename("http://example.com/"), "__unnamed__");

    let sum = format!("sha256:{}", "ab".repeat(32));
    let b = lower_str(
        &format!(
            "FROM scratch\nADD --checksum={sum} https://example.com/x/tool.tgz local.txt /opt/\n"
        ),
        &BuildOptions::default(),
    );
    let e = b.unwrap_err();
    assert!(
        e.contains("checksum can't be specified for multiple sources"),
        "{e}"
    );
    let b = lower_str(
        &format!(
            "FROM scratch\nADD --checksum={sum} --chmod=755 https://example.com/x/tool.tgz /opt/\n"
        ),
        &BuildOptions::default(),
    )
    .unwrap();
    let file = b.graph.vertex(b.target);
    let Op::Http(http) = &b.graph.vertex(file.inputs[1]).op else {
        panic!("not a download")
    };
    assert_eq!(http.url, "https://example.com/x/tool.tgz");
    assert_eq!(http.filename, "tool.tgz");
    assert_eq!(
        http.checksum.as_ref().map(|d| d.as_str()),
        Some(sum.as_str())
    );
    let Op::File(f) = &file.op else { panic!() };
    let FileAction::Copy {
        paths,
        unpack_archives,
        mode,
        ..
    } = &f.actions[0]
    else {
        panic!()
    };
    assert_eq!(paths, &["tool.tgz"]);
    assert!(!unpack_archives, "downloads are never extracted");
    assert_eq!(*mode, Some(0o755));
    assert_eq!(
        b.image.history.last().unwrap().created_by.as_deref(),
        Some("ADD https://example.com/x/tool.tgz /opt/ # buildkit")
    );
    let e = lower_str(
        "FROM scratch\nCOPY https://example.com/a /a\n",
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(e.contains("source can't be a URL for COPY"), "{e}");
    let e = lower_str(
        "FROM scratch\nADD --checksum=md5:12 https://example.com/a /a\n",
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(e.contains("invalid checksum"), "{e}");
    let e = lower_str(
        "FROM scratch\nADD https://example.com/a https://example.com/b /a\n",
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(e.contains("must be a directory and end with a /"), "{e}");
}

#[test]
fn copy_link_with_chmod_is_an_ordinary_copy_as_in_buildkit() {
    let b = lower_str(
        "FROM base\nCOPY --link --chmod=755 a.txt /app/\n",
        &BuildOptions::default(),
    )
    .unwrap();
    let target = b.graph.vertex(b.target);
    assert!(matches!(target.op, Op::File(_)), "{:?}", target.op);
    assert!(!matches!(b.graph.vertex(target.inputs[0]).op, Op::Scratch));
}

#[test]
fn copy_link_is_made_on_scratch_and_merged() {
    let b = lower_str(
        "FROM base AS one\nRUN one\nCOPY --link a.txt /app/\n\
         FROM base AS two\nRUN two\nCOPY --link a.txt /app/\n\
         FROM scratch\nCOPY --from=one /app /1\nCOPY --from=two /app /2\n",
        &BuildOptions::default(),
    )
    .unwrap();
    let merges: Vec<VertexId> = b
        .graph
        .needed_for(&[b.target])
        .into_iter()
        .filter(|id| matches!(b.graph.vertex(*id).op, Op::Merge))
        .collect();
    assert_eq!(merges.len(), 2);
    let copies: Vec<VertexId> = merges
        .iter()
        .map(|m| b.graph.vertex(*m).inputs[1])
        .collect();
    // The same copy in both stages: one vertex, whatever it is stacked on.
    assert_eq!(copies[0], copies[1]);
    let copy = b.graph.vertex(copies[0]);
    assert!(matches!(copy.op, Op::File(_)));
    assert!(matches!(b.graph.vertex(copy.inputs[0]).op, Op::Scratch));
    for m in &merges {
        assert!(matches!(
            b.graph.vertex(b.graph.vertex(*m).inputs[0]).op,
            Op::Exec(_)
        ));
    }
}

#[test]
fn chmod_octal_or_symbolic() {
    let copy_of = |text: &str| {
        let b = lower_str(text, &BuildOptions::default())?;
        let Op::File(f) = &b.graph.vertex(b.target).op else {
            panic!()
        };
        let FileAction::Copy { mode, chmod, .. } = &f.actions[0] else {
            panic!()
        };
        Ok::<_, String>((*mode, chmod.clone()))
    };
    assert_eq!(
        copy_of("FROM scratch\nCOPY --chmod=0755 a /a\n"),
        Ok((Some(0o755), None))
    );
    assert_eq!(
        copy_of("FROM scratch\nCOPY --chmod=u+x,go-w a /a\n"),
        Ok((
            None,
            Some(rbuild_solver::chmod::SymbolicMode::parse("u+x,go-w").unwrap())
        ))
    );
    let e = copy_of("FROM scratch\nCOPY --chmod=u+q a /a\n").unwrap_err();
    assert!(
        e.contains("Dockerfile:2:6") && e.contains("invalid mode"),
        "{e}"
    );
    let e = copy_of("FROM scratch\nCOPY --chmod=17777 a /a\n").unwrap_err();
    assert!(e.contains("at most 7777"), "{e}");
}

#[test]
fn errors_point_at_the_problem() {
    let e = lower_str(
        "FROM scratch AS builder\nFROM scratch\nCOPY --from=bulider /a /b\n",
        &BuildOptions::default(),
    )
    .unwrap_err();
    assert!(e.contains("Dockerfile:3:6: error: no stage named \"bulider\", and no such image: bulider: not found"), "{e}");
    assert!(e.contains("did you mean --from=builder?"), "{e}");
    let e = lower_str("FROM missing:1\n", &BuildOptions::default()).unwrap_err();
    assert!(
        e.starts_with("Dockerfile:1:6: error: missing:1: not found"),
        "{e}"
    );
    let e = lower_str("FROM base\nCOPY a b /c\n", &BuildOptions::default()).unwrap_err();
    assert!(e.contains("must be a directory and end with a /"), "{e}");
}

#[test]
fn global_args_in_from_and_build_arg_overrides() {
    let mut options = BuildOptions::default();
    options.build_args.insert("TAG".into(), "2".into());
    options.build_args.insert("NOPE".into(), "x".into());
    let b = lower_str(
        "ARG TAG=1\nFROM base:$TAG\nARG TAG\nRUN echo $TAG\n",
        &options,
    )
    .unwrap();
    let Op::Image(img) = &b.graph.vertex(b.graph.vertex(b.target).inputs[0]).op else {
        panic!()
    };
    assert_eq!(img.reference, "docker.io/library/base:2");
    assert!(exec_of(&b, b.target).env.contains(&"TAG=2".to_string()));
    assert!(b.warnings.iter().any(|w| w.message.contains("[NOPE]")));
}

#[test]
fn entrypoint_resets_inherited_cmd_and_expose_normalizes() {
    let b = lower_str(
        "FROM base\nENTRYPOINT [\"e\"]\nEXPOSE 80 53/UDP 8000-8001\n",
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(b.image.config.cmd, None);
    assert_eq!(
        b.image.config.args_escaped,
        Some(true),
        "as BuildKit writes it"
    );
    let ports: Vec<&String> = b
        .image
        .config
        .exposed_ports
        .as_ref()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
}

#[test]
fn scratch_stages_work_in_the_root_directory() {
    let b = lower_str("FROM scratch\nENV A=1\n", &BuildOptions::default()).unwrap();
    assert_eq!(b.image.config.working_dir.as_deref(), Some("/"));
    let b = lower_str("FROM base\nENV A=1\n", &BuildOptions::default()).unwrap();
    assert_eq!(
        b.image.config.working_dir, None,
        "an image's empty WorkingDir stays empty"
    );
}

#[test]
fn history_text_like_buildkit() {
    assert_eq!(go_duration(30_000_000_000), "30s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(500_000_000), "500ms");
    let b = lower_str(
        "FROM base\nARG V\nARG W=2\nEXPOSE 80 53/udp\nHEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD true\n",
        &BuildOptions { build_args: [("V".to_string(), "9".to_string())].into(), ..Default::default() },
    )
    .unwrap();
    let h: Vec<&str> = b
        .image
        .history
        .iter()
        .skip(1)
        .map(|h| h.created_by.as_deref().unwrap())
        .collect();
    assert_eq!(
        h,
        [
            "ARG V=9",
            "ARG W=2",
            "EXPOSE map[53/udp:{} 80/tcp:{}]",
            "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"30s\" \"5s\" \"0s\" '\\x03'}",
        ]
    );
}

#[test]
fn predefined_platform_and_proxy_args() {
    let options = BuildOptions {
        build_args: [("http_proxy".to_string(), "http://proxy:3128".to_string())].into(),
        ..Default::default()
    };
    let b = lower_str(
        "ARG TARGETARCH\nFROM base:$TARGETARCH\nARG TARGETPLATFORM\nARG BUILDOS\nRUN echo $TARGETPLATFORM $BUILDOS\n",
        &options,
    )
    .unwrap();
    let run = exec_of(&b, b.target);
    assert!(
        run.env.contains(&"TARGETPLATFORM=linux/amd64".to_string()),
        "{:?}",
        run.env
    );
    assert!(
        run.env
            .contains(&"http_proxy=http://proxy:3128".to_string())
    );
    assert!(
        !b.warnings.iter().any(|w| w.message.contains("http_proxy")),
        "proxies are never unused"
    );
    let Op::Image(img) = &b.graph.vertex(b.graph.vertex(b.target).inputs[0]).op else {
        panic!()
    };
    assert_eq!(img.reference, "docker.io/library/base:amd64");
    let history: Vec<&str> = b
        .image
        .history
        .iter()
        .filter_map(|h| h.created_by.as_deref())
        .collect();
    assert!(history.iter().all(|h| !h.contains("proxy")), "{history:?}");
}

/// The progress names of the steps the target needs, sorted.
fn step_names(b: &Build) -> Vec<String> {
    let mut names: Vec<String> = b
        .graph
        .needed_for(&[b.target])
        .into_iter()
        .filter_map(|v| b.graph.vertex(v).name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn steps_are_numbered_as_buildkit_numbers_them() {
    let names = |text: &str| step_names(&lower_str(text, &BuildOptions::default()).unwrap());
    // FROM scratch and FROM <stage> are no steps.
    assert_eq!(
        names("FROM scratch\nCOPY a /\nRUN x\n"),
        ["[1/2] COPY a /", "[2/2] RUN x"]
    );
    let from_stage = names("FROM base AS a\nFROM a\nRUN x\n");
    assert!(from_stage[0].starts_with("[a 1/1] FROM "), "{from_stage:?}");
    assert_eq!(from_stage[1], "[stage-1 1/1] RUN x");
    // Positions are padded to the width of the total.
    let ten = format!("FROM base\n{}", "RUN x\n".repeat(9));
    let ten = names(&ten);
    assert!(ten.contains(&"[ 2/10] RUN x".to_string()), "{ten:?}");
    assert!(
        ten.iter().any(|n| n.starts_with("[ 1/10] FROM ")),
        "{ten:?}"
    );
}

#[test]
fn multi_platform_names_say_the_platform_and_the_cross_target() {
    let options = BuildOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        multi_platform: true,
        ..Default::default()
    };
    let b = lower_str(
        "FROM --platform=$BUILDPLATFORM base AS a\nRUN x\nARG TARGETARCH\nRUN y\n",
        &options,
    )
    .unwrap();
    let names = step_names(&b);
    assert!(
        names[0].starts_with("[linux/amd64 a 1/3] FROM "),
        "{names:?}"
    );
    assert_eq!(
        names[1..],
        [
            "[linux/amd64 a 2/3] RUN x",
            "[linux/amd64->arm64 a 3/3] RUN y"
        ]
    );
}

#[test]
fn target_and_stage_platforms() {
    let arm64 = BuildOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    let text = "FROM --platform=$BUILDPLATFORM base AS tools\nARG TARGETARCH\nRUN echo $TARGETARCH\n\
                FROM base\nARG TARGETPLATFORM BUILDARCH\nRUN echo $TARGETPLATFORM\n\
                COPY --from=tools / /tools\n";
    let b = lower_str(text, &arm64).unwrap();
    assert_eq!(
        (b.image.os.as_str(), b.image.architecture.as_str()),
        ("linux", "arm64")
    );
    let copy = b.graph.vertex(b.target);
    let run = exec_of(&b, copy.inputs[0]);
    assert!(run.env.contains(&"TARGETPLATFORM=linux/arm64".into()));
    assert!(run.env.contains(&"BUILDARCH=amd64".into()), "{:?}", run.env);
    assert_eq!(run.platform.as_deref(), Some("linux/arm64"));
    let Op::Image(base) = &b.graph.vertex(b.graph.vertex(copy.inputs[0]).inputs[0]).op else {
        panic!("RUN is not on the image")
    };
    assert_eq!(base.digest, Digest::of(b"base linux/arm64"));
    // The tools stage runs on the build platform, for the target's architecture.
    let tools = exec_of(&b, copy.inputs[1]);
    assert_eq!(tools.platform, None);
    assert!(tools.env.contains(&"TARGETARCH=arm64".into()));
    let Op::Image(base) = &b.graph.vertex(b.graph.vertex(copy.inputs[1]).inputs[0]).op else {
        panic!("RUN is not on the image")
    };
    assert_eq!(base.digest, Digest::of(b"base linux/amd64"));

    // Without --platform, a stage's FROM --platform is the image's; with one, it is not.
    let text = "FROM --platform=linux/arm/v6 base\nRUN true\n";
    let b = lower_str(text, &BuildOptions::default()).unwrap();
    assert_eq!(
        (b.image.architecture.as_str(), b.image.variant.as_deref()),
        ("arm", Some("v6"))
    );
    assert_eq!(
        exec_of(&b, b.target).platform.as_deref(),
        Some("linux/arm/v6")
    );
    let b = lower_str(text, &arm64).unwrap();
    assert_eq!(
        (b.image.architecture.as_str(), b.image.variant.as_deref()),
        ("arm64", None)
    );
    // scratch takes the target platform, whatever FROM --platform says.
    let b = lower_str(
        "FROM --platform=linux/arm64 scratch\nCOPY a /\n",
        &BuildOptions::default(),
    )
    .unwrap();
    assert_eq!(b.image.architecture, Platform::host().architecture);
    for bad in [
        "FROM --platform=linux/ base\n",
        "FROM --platform=$NOPE base\n",
    ] {
        let e = lower_str(bad, &BuildOptions::default()).unwrap_err();
        assert!(e.contains("platform"), "{e}");
    }
}

#[test]
fn onbuild_triggers_run_first_in_the_child() {
    let text = "FROM base AS parent\nONBUILD RUN echo parent-trigger\nONBUILD ENV T=1\nRUN echo parent\n\
                FROM parent\nRUN echo child\n";
    let b = lower_str(text, &BuildOptions::default()).unwrap();
    let child = exec_of(&b, b.target);
    assert_eq!(child.args[2], "echo child");
    assert!(
        child.env.contains(&"T=1".to_string()),
        "the ENV trigger ran: {:?}",
        child.env
    );
    let trigger_vertex = b.graph.vertex(b.target).inputs[0];
    let trigger = exec_of(&b, trigger_vertex);
    assert_eq!(trigger.args[2], "echo parent-trigger");
    // As BuildKit names a trigger's step.
    assert_eq!(
        b.graph.vertex(trigger_vertex).name.as_deref(),
        Some("[stage-1 1/2] ONBUILD RUN echo parent-trigger")
    );
    assert_eq!(b.image.config.on_build, None, "triggers are consumed");
    assert_eq!(
        b.graph.vertex(b.target).name.as_deref(),
        Some("[stage-1 2/2] RUN echo child")
    );
    // The parent stage keeps its triggers for images built from it.
    let b = lower_str(
        text,
        &BuildOptions {
            target: Some("parent".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        b.image.config.on_build.as_deref().unwrap(),
        ["RUN echo parent-trigger", "ENV T=1"]
    );
    let e = lower_str(
        "FROM base AS p\nONBUILD RUN [\"unterminated\nFROM p\n",
        &BuildOptions::default(),
    );
    assert!(
        e.is_ok(),
        "a shell-form trigger that looks like bad JSON is still a command"
    );
}

#[test]
fn dest_normalization() {
    assert_eq!(normalize_dest("/app", "."), "/app/");
    assert_eq!(normalize_dest("/app", "x"), "/app/x");
    assert_eq!(normalize_dest("/app", "x/"), "/app/x/");
    assert_eq!(normalize_dest("/app", "/abs"), "/abs");
    assert_eq!(normalize_dest("/", "."), "/");
}
