"""dvfo-keygen: CurveZMQ key pairs for the edge-cloud link.

Run it once for the cloud (`dvfo-keygen keys --name cloud`) and once per robot
(`dvfo-keygen keys --name robot1`); give the cloud `--curve-secret keys/cloud.key_secret` and a
directory holding the robots' public `*.key` files (`--curve-clients`), and give each robot the
cloud's public `cloud.key` and its own `robot1.key_secret`. Secret files are written mode 0600.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional

import zmq.auth


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dvfo-keygen", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="where to write NAME.key (public) and NAME.key_secret")
    parser.add_argument("--name", default="dvfo", help="base name of the two files (default: dvfo)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.name) or args.name.startswith("."):
        parser.error(f"--name '{args.name}' must be 1-64 letters, digits, '_', '-', '.'")
    public_file = os.path.join(args.directory, f"{args.name}.key")
    secret_file = public_file + "_secret"
    if not args.force and (os.path.exists(public_file) or os.path.exists(secret_file)):
        print(f"dvfo-keygen: error: {public_file} already exists (use --force to overwrite)", file=sys.stderr)
        return 1
    try:
        os.makedirs(args.directory, exist_ok=True)
        old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
        try:
            public_file, secret_file = zmq.auth.create_certificates(args.directory, args.name)
        finally:
            os.umask(old_umask)
        os.chmod(public_file, 0o644)
    except OSError as exc:
        print(f"dvfo-keygen: error: cannot write keys to {args.directory}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"public key: {public_file}")
    print(f"secret key: {secret_file}  (keep it on this machine only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
