"""How the command's threads share the cores: a short OpenMP spin-wait, set before torch."""

import os
import subprocess
import sys

from nmt_bert.cpu import SPIN_COUNT, share_cores_politely


def test_a_short_spin_wait_unless_the_user_chose_one():
    env = {}
    share_cores_politely(env)
    assert env == {"GOMP_SPINCOUNT": str(SPIN_COUNT)}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(chosen)
        share_cores_politely(env)
        assert env == chosen  # the user's choice stands


def test_the_command_sets_it_before_torch_loads():
    code = ("import os, sys; import nmt_bert.cli; "
            "print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == [str(SPIN_COUNT), "False"]
