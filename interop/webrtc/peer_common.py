"""What every Python interop peer shares: the command line, the signalling lines, the result's
digest rule."""
import argparse
import hashlib
import json
import sys


def arguments(name, message_size=65536, extra=None):
    """`offer|answer (--echo | --send N) [--channels K] [--message-size N]` plus what `extra`
    (a function taking the parser) adds."""
    parser = argparse.ArgumentParser(prog=name)
    parser.add_argument("role", choices=["offer", "answer"])
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--send", type=int)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--message-size", type=int, default=message_size)
    if extra:
        extra(parser)
    args = parser.parse_args()
    if (args.send is None) == (not args.echo):
        parser.error("give either --echo or --send N")
    if args.channels < 1:
        parser.error("--channels must be at least 1")
    return args


def decode(raw):
    """One signalling line as a dict ({} for blank lines, non-JSON and non-objects)."""
    try:
        message = json.loads(raw)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


def write_line(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def combine(digests):
    """The result's digest: the channel's own with one channel, else SHA-256 over the
    per-channel hex digests in channel order."""
    return digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
