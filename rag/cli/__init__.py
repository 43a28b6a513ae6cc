"""`rag`: the command line over the public API. Results go to stdout, progress and errors to stderr.

Exit codes: 0 success, 1 an expected failure (one line on stderr), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import os
import sys

from rag.cli.output import is_text
from rag.cli.parser import build_parser

# Arguments that are text (a query, a model name, a URL); a file name may be any bytes, these may not.
TEXT_ARGUMENTS = ("query", "question", "store", "embed_model", "gen_model", "answer_mode", "path", "since", "host")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in TEXT_ARGUMENTS:
        value = getattr(args, name, None)
        if isinstance(value, str) and not is_text(value):
            # Python hands undecodable bytes over as lone surrogates, which no tokenizer or database takes.
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            flag = name if name in ("query", "question") else "--" + name.replace("_", "-")
            parser.error(f"{flag} '{shown}' is not valid UTF-8 text; give it in UTF-8")
    for name in ("index", "store", "embed_model", "gen_model"):
        if not hasattr(args, name):
            setattr(args, name, None)
    args.quiet = getattr(args, "quiet", False)
    args.json = getattr(args, "json", False)
    from rag.cli.commands import COMMANDS
    from rag.errors import ConfigError, RagError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"rag {args.command}: {e}", file=sys.stderr)
        return 2
    except RagError as e:
        print(f"rag {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nrag {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rag search ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # an output folder that cannot be written, a file that vanished mid-command
        where = f"{e.filename}: " if e.filename else ""
        print(f"rag {args.command}: {where}{e.strerror or e}; check the path and its permissions", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
