"""Checks that Cargo.toml's dev profile optimizes the crates on the query and build paths.

`cargo pgrx install` and `scripts/install.sh` build the dev profile unless given `--release`.
Unoptimized, the extension answered 0.82x pgvector's queries/s at 64 dimensions where the
optimized build answers about 1.6x (README, "Build profiles"); this keeps that from coming
back unnoticed. Run by `scripts/test.sh lint`.
"""

import sys
import tomllib
from pathlib import Path

# The crates whose code runs on every query, insert and build.
HOT = ("omendb", "omen-core", "simsimd", "pgrx", "pgrx-pg-sys", "rayon", "rayon-core")


def main() -> int:
    cargo = tomllib.loads((Path(__file__).resolve().parent.parent / "Cargo.toml").read_text())
    dev = cargo.get("profile", {}).get("dev", {})
    packages = dev.get("package", {})
    slow = [name for name in HOT if packages.get(name, dev).get("opt-level", 0) not in (2, 3)]
    if slow:
        print(f"Cargo.toml: [profile.dev] leaves {', '.join(slow)} unoptimized (opt-level 2 or 3 expected)")
        return 1
    print(f"dev profile: {', '.join(HOT)} optimized")
    return 0


if __name__ == "__main__":
    sys.exit(main())
