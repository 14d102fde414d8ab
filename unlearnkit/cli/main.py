"""``unlearnkit``, the console script: ``fit``, ``validate`` and ``test`` run one model through LightningCLI
(``cli/lightning_cli.py``); ``report``, ``demo``, ``generate``, ``audit`` and ``tune`` are not about one model
and are dispatched here, before it.
"""

from __future__ import annotations

import sys

from unlearnkit.cli.lightning_cli import (  # noqa: F401  (the CLI's names, importable from the console script)
    METHOD_CLASSES,
    SHARED_OPTIONS,
    TRAINING_RECIPE,
    method_defaults,
    print_error,
    run,
    run_cli,
    with_method_defaults,
)
from unlearnkit.errors import UnlearnkitError


def _generate(args: list[str]) -> int:
    from unlearnkit.data.synthetic import main as generate_main

    return generate_main(args)


def _demo(args: list[str]) -> int:
    from unlearnkit.demo import main as demo_main

    return demo_main(args)


def _report(args: list[str]) -> int:
    from unlearnkit.report import main as report_main

    return report_main(args)


def _audit(args: list[str]) -> int:
    from unlearnkit.audit import main as audit_main

    return audit_main(args)


def _tune(args: list[str]) -> int:
    from unlearnkit.tuning import main as tune_main

    return tune_main(args)


EXTRA_COMMANDS = {"generate": _generate, "demo": _demo, "report": _report, "audit": _audit, "tune": _tune}


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    if not argv or argv[0] not in EXTRA_COMMANDS:
        return run(None if args is None else argv)
    try:
        return EXTRA_COMMANDS[argv[0]](argv[1:]) or 0
    except UnlearnkitError as err:
        print_error(err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
