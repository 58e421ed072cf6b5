import subprocess
import sys
from pathlib import Path

from fetalmlops.anonymizer.profile.annex_e import ACTIONS, REPEATING
from fetalmlops.anonymizer.profile.policy import Policy

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "generate_annex_e.py"


def test_the_table_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_table_covers_the_attributes_ultrasound_phi_lives_in() -> None:
    assert len(ACTIONS) > 600 and REPEATING
    policy = Policy(secret=b"k")
    assert policy.action(0x00100010) == "Z"  # Patient's Name
    assert policy.action(0x00080018) == "U"  # SOP Instance UID
    assert policy.action(0x00400275) == "X"  # Request Attributes Sequence
    assert policy.action(0x60023000) == "X"  # an overlay in a repeating group
    assert policy.action(0x00080070) is None  # Manufacturer: kept, the model matters for drift
