# Sourced by the bench scripts: from the repository's root, with the reference builders
# started (`bench_setup --debian` adds the Debian+gcc base), hyperfine installed and rbuild
# built for release (or RBUILD_BIN). Sets repo, rbuild, work (removed on exit), DOCKER_HOST and DOCKER_BUILDKIT.
bench_setup() {
  cd "$(dirname "$0")/.."
  repo=$PWD
  "${REFERENCE_BUILDERS:-$repo/../shared/tools/reference-builders.sh}" "$@" >/dev/null
  command -v hyperfine >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q hyperfine >/dev/null
  # RBUILD_BIN times another rbuild binary (an earlier commit's, for a before/after).
  if [ -z "${RBUILD_BIN:-}" ]; then
    cargo build --release --locked --bin rbuild 2>/dev/null
  fi
  rbuild=${RBUILD_BIN:-$repo/target/release/rbuild}
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  export DOCKER_HOST=unix:///tmp/ref/docker/docker.sock DOCKER_BUILDKIT=1
}

# c_project DIR REGISTRY: a realistic multi-stage build in DIR: 24 C files of generated,
# source-like code (a few seconds of gcc -O2 on this machine) compiled on the ~460 MiB
# Debian+gcc base of REGISTRY into one static binary, which a busybox final stage keeps.
c_project() {
  mkdir -p "$1/src"
  python3 - "$1/src" <<'PY'
import sys, random
root = sys.argv[1]
random.seed(7)
for f in range(24):
    with open(f"{root}/part{f}.c", "w") as out:
        out.write("#include <string.h>\n#include <stdlib.h>\n")
        for n in range(60):
            ops = " ".join(f"x = (x * {random.randint(3, 99)} + {random.randint(1, 999)}) ^ (x >> {random.randint(1, 13)});" for _ in range(12))
            out.write(f"unsigned long part{f}_{n}(unsigned long x) {{ for (int i = 0; i < {random.randint(8, 64)}; i++) {{ {ops} }} return x; }}\n")
        out.write(f"unsigned long part{f}(unsigned long x) {{ return " + " + ".join(f"part{f}_{n}(x)" for n in range(60)) + "; }\n")
with open(f"{root}/main.c", "w") as out:
    out.write("#include <stdio.h>\n")
    for f in range(24):
        out.write(f"unsigned long part{f}(unsigned long);\n")
    out.write("int main(void) { unsigned long x = 1;\n")
    for f in range(24):
        out.write(f"  x ^= part{f}(x);\n")
    out.write('  printf("%lu\\n", x); return 0; }\n')
PY
  cat > "$1/Dockerfile" <<EOF
FROM $2/library/debian-gcc:bookworm AS build
WORKDIR /src
COPY src/ ./
RUN gcc -O2 -static -o /app *.c
FROM $2/library/busybox:1.35
COPY --from=build /app /usr/local/bin/app
CMD ["app"]
EOF
}
