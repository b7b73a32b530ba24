"""`tbib news2`: compute a NEWS2 score from observations and print it as one JSON line.

An omitted option is a missing parameter (listed in ``missing``; the score is ``partial``). Implausible values print one
line on stderr and exit 1; malformed options are argparse errors (exit 2).
"""

from __future__ import annotations

import argparse
from typing import Any

from teleconsult.alerts.errors import InvalidObservationError
from teleconsult.alerts.news2 import Consciousness, Observations, score
from teleconsult.cli.common import CliError, print_json


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_parser(sub: Any) -> None:
    """Register `tbib news2`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "news2",
        help="compute a NEWS2 score from observations",
        description="Compute a NEWS2 score (RCP 2017). Omitted observations are reported missing, never normal.",
    )
    p.add_argument("--respiratory-rate", type=_number, metavar="N", help="breaths per minute")
    p.add_argument("--spo2", type=_number, metavar="N", help="oxygen saturation in %%")
    p.add_argument(
        "--spo2-scale", type=int, choices=(1, 2), default=1, help="SpO2 scale (2 only for a clinician-set target)"
    )
    p.add_argument("--supplemental-oxygen", choices=("yes", "no"), help="on supplemental oxygen (yes) or air (no)")
    p.add_argument("--systolic", type=_number, metavar="N", help="systolic blood pressure in mmHg")
    p.add_argument("--pulse", type=_number, metavar="N", help="pulse per minute")
    p.add_argument("--consciousness", choices=[c.value for c in Consciousness], help="ACVPU level")
    p.add_argument("--temperature", type=_number, metavar="X", help="body temperature in °C (scored to one decimal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Score and print the JSON result."""
    obs = Observations(
        respiratory_rate=args.respiratory_rate,
        spo2=args.spo2,
        spo2_scale=args.spo2_scale,
        supplemental_oxygen=None if args.supplemental_oxygen is None else args.supplemental_oxygen == "yes",
        systolic_bp=args.systolic,
        pulse=args.pulse,
        consciousness=None if args.consciousness is None else Consciousness(args.consciousness),
        temperature=args.temperature,
    )
    try:
        result = score(obs)
    except InvalidObservationError as exc:
        raise CliError(str(exc)) from None
    print_json(result.to_json())
    return 0
