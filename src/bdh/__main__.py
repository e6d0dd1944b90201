import sys

try:
    from bdh.cli import main
except KeyboardInterrupt:  # Ctrl-C before the CLI could catch it itself
    print("error: interrupted", file=sys.stderr)
    sys.exit(130)

main()
