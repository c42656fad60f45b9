"""CLI commands for registry credentials: login and logout, as Docker's.

Credentials go in Docker's config file (credentials.py), where `docker login` keeps them too.
"""

import sys

_HANDLERS = "pyctr.images.auth_commands"


def register(sub, command) -> None:
    """Add login and logout. `command(name, "module:function", help)` returns a subparser."""
    p = command("login", f"{_HANDLERS}:cmd_login",
                "log in to a registry (credentials kept in Docker's config.json)")
    p.add_argument("-u", "--username", help="username")
    p.add_argument("-p", "--password", help="password (visible to other users: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY",
                   help="host[:port] (default docker.io)")

    p = command("logout", f"{_HANDLERS}:cmd_logout", "forget the credentials of a registry")
    p.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY",
                   help="host[:port] (default docker.io)")


def cmd_login(args) -> int:
    from pyctr.images import credentials, reference, registry
    from pyctr.runtime.errors import PyctrError

    server = reference.normalize_registry(args.registry)
    if args.password is not None and args.password_stdin:
        raise PyctrError("--password and --password-stdin are mutually exclusive")
    if args.password_stdin and not args.username:
        raise PyctrError("--password-stdin needs --username")
    if args.password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)

    username, password = args.username, args.password
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    elif username is None and password is None and (stored := credentials.lookup(server)):
        # As Docker: with nothing given, the stored credentials are checked again.
        print("Authenticating with existing credentials...")
        username, password = stored
    if not username or password is None:
        username, password = _ask(username, password)
    if not password:
        raise PyctrError("login needs a password")

    registry.check_login(server, username, password)
    credentials.store(server, username, password)
    print("Login Succeeded")
    return 0


def cmd_logout(args) -> int:
    from pyctr.images import credentials, reference

    server = reference.normalize_registry(args.registry)
    if not credentials.remove(server):
        print(f"Not logged in to {credentials.config_key(server)}")  # as Docker: not an error
        return 0
    print(f"Removing login credentials for {credentials.config_key(server)}")
    return 0


def _ask(username: str | None, password: str | None) -> tuple[str, str]:
    """Prompt on the terminal for what was not given; without a terminal that is an error."""
    import getpass

    from pyctr.runtime.errors import PyctrError

    if not sys.stdin.isatty():
        raise PyctrError("cannot perform an interactive login without a terminal: "
                         "give -u USER and --password-stdin")
    if not username:
        username = input("Username: ").strip()
        if not username:
            raise PyctrError("login needs a username")
    if password is None:
        password = getpass.getpass("Password: ")
    return username, password
